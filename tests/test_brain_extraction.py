"""Brain extraction: the bundle's brain_extractor (format 2), the inference stage, and where labels may go."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from brainseg_tf.bundle import attach_brain_extractor, read_bundle_info, verify_bundle, write_manifest, write_model_bundle
from brainseg_tf.bundle.manifest import sha256_file
from brainseg_tf.bundle.spec import FORMAT_VERSION
from brainseg_tf.config import Config, InferenceConfig, QcConfig
from brainseg_tf.errors import BundleError, ConfigError, ImageError
from brainseg_tf.io import Image
from brainseg_tf.labels import BRAIN, TISSUE
from brainseg_tf.models import build_segmenter
from brainseg_tf.preprocessing import InputSpec, Preprocessing, SliceReader
from inference.extraction import BrainExtractor, StrippedInput, direction_agreement, grown, largest_filled_component, stripped_brain
from inference.heads import Network, SoftmaxHead
from inference.inferers import SliceInferer
from inference.predict import SliceSpec
from inference.segmenter import Segmenter

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

CONFIG = Config().replace({"model.base_filters": 4, "model.depth": 2})
EXTRACTOR_CONFIG = CONFIG.replace({"preprocess.voxel_size": 2.0, "generator.slice_axis": 1})


# --- the bundle format ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny multiclass tissue bundle, a tiny brain extractor, and a single_class tissue model."""
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("extractor-bundles")
    multi = build_segmenter("multiclass", (None, None, 3), TISSUE.num_classes, CONFIG.model)
    brain = build_segmenter("single_class", (None, None, 3), BRAIN.num_classes, CONFIG.model)
    single = build_segmenter("single_class", (None, None, 3), TISSUE.num_classes, CONFIG.model)
    return {
        "multi": write_model_bundle(root / "multi", multi, family="multiclass", label_set=TISSUE, config=CONFIG, metrics={}),
        "brain": write_model_bundle(root / "brain", brain, family="single_class", label_set=BRAIN, config=EXTRACTOR_CONFIG, metrics={}, class_index=1),
        "single": write_model_bundle(root / "single", single, family="single_class", label_set=TISSUE, config=CONFIG, metrics={}, class_index=2),
        "root": root,
    }


@pytest.fixture
def with_extractor(bundles: dict[str, Path], tmp_path: Path) -> Path:
    copy = Path(shutil.copytree(bundles["multi"], tmp_path / "multi"))
    return attach_brain_extractor(copy, bundles["brain"])


def test_an_attached_extractor_is_verified_and_described(with_extractor: Path) -> None:
    data = verify_bundle(with_extractor)
    assert data["format_version"] == FORMAT_VERSION == 3
    assert data["brain_extractor"]["path"] == "brain_extractor"
    info = read_bundle_info(with_extractor)
    assert info.brain_extractor is not None
    assert (info.brain_extractor.label_set, info.brain_extractor.class_index, info.brain_extractor.input_spec.voxel_size) == (BRAIN, 1, 2.0)
    listed = (with_extractor / "manifest.sha256").read_text()
    assert "brain_extractor/saved_model/saved_model.pb" in listed  # the outer manifest covers the extractor


def test_writers_take_an_extractor_directly(bundles: dict[str, Path], tmp_path: Path) -> None:
    model = build_segmenter("multiclass", (None, None, 3), TISSUE.num_classes, CONFIG.model)
    path = write_model_bundle(tmp_path / "m", model, family="multiclass", label_set=TISSUE, config=CONFIG, metrics={}, brain_extractor=bundles["brain"])
    assert read_bundle_info(path).brain_extractor is not None
    single = build_segmenter("single_class", (None, None, 3), TISSUE.num_classes, CONFIG.model)
    with pytest.raises(BundleError, match="only a multiclass model or an ensemble holds a brain extractor"):
        write_model_bundle(tmp_path / "s", single, family="single_class", label_set=TISSUE, config=CONFIG, metrics={}, class_index=2,
                           brain_extractor=bundles["brain"])


def test_attach_refuses_what_is_not_an_extractor_or_not_a_segmenter(bundles: dict[str, Path], tmp_path: Path) -> None:
    copy = Path(shutil.copytree(bundles["multi"], tmp_path / "multi"))
    with pytest.raises(BundleError, match="not a brain extractor: expected a single_class model on label set 'brain'"):
        attach_brain_extractor(copy, bundles["single"])
    with pytest.raises(BundleError, match="a lone single_class model is not a segmenter"):
        attach_brain_extractor(Path(shutil.copytree(bundles["single"], tmp_path / "single")), bundles["brain"])
    with pytest.raises(BundleError, match="is a brain-mask network itself"):
        attach_brain_extractor(Path(shutil.copytree(bundles["brain"], tmp_path / "brain")), bundles["brain"])
    assert "brain_extractor" not in verify_bundle(copy)  # nothing changed by the refusals


def _rewrite(bundle: Path, change) -> None:
    data = json.loads((bundle / "bundle.json").read_text())
    change(data)
    (bundle / "bundle.json").write_text(json.dumps(data))
    write_manifest(bundle)  # a consistent manifest: the description itself is at fault


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format_version=1), "a brain extractor needs format_version 2 or later. Received: 1"),
        (lambda d: d["brain_extractor"].update(path="elsewhere"), "expected brain_extractor as"),
        (lambda d: d["brain_extractor"].update(sha256="0" * 64), "sha256 does not match bundle.json's brain_extractor"),
        (lambda d: d.update(brain_extractor="brain_extractor"), "expected brain_extractor as"),
    ],
)
def test_verify_refuses_a_bad_extractor_entry(with_extractor: Path, change, message: str) -> None:
    _rewrite(with_extractor, change)
    with pytest.raises(BundleError, match=message):
        verify_bundle(with_extractor)


def test_verify_refuses_an_extractor_on_another_label_set(with_extractor: Path) -> None:
    inner = with_extractor / "brain_extractor"
    _rewrite(inner, lambda d: d.update(label_set=TISSUE.to_dict(), class_index=2))
    _rewrite(with_extractor, lambda d: d["brain_extractor"].update(sha256=sha256_file(inner / "manifest.sha256")))
    with pytest.raises(BundleError, match="brain_extractor/bundle.json: not a brain extractor: expected class_index 1, found 2"):
        verify_bundle(with_extractor)


def test_a_tampered_extractor_file_fails_the_outer_manifest(with_extractor: Path) -> None:
    pb = with_extractor / "brain_extractor" / "saved_model" / "saved_model.pb"
    pb.write_bytes(pb.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="sha256"):
        verify_bundle(with_extractor)


def test_an_attached_extractor_runs_through_from_bundle(with_extractor: Path) -> None:
    segmenter = Segmenter.from_bundle(with_extractor)
    assert segmenter.extractor is not None and len(segmenter.extractor.networks) == len(InferenceConfig().extraction_axes) == 2
    assert [n.inferer.spec.slice_axis for n in segmenter.extractor.networks] == [0, 1]


# --- the stage ------------------------------------------------------------------------------------

SPEC_1MM = InputSpec(Preprocessing(1.0, 0.0, 100.0), SliceReader(2, 1), 8)


def _bright_is_brain(batch: np.ndarray) -> np.ndarray:
    """Stand-in extractor: the centre slice's normalised intensity above 0.5 is brain."""
    return (batch[..., batch.shape[-1] // 2] > 0.5).astype(np.float32)[..., None]


def _extractor(margin_mm: float = 3.0, predicts=(_bright_is_brain,) * 3) -> BrainExtractor:
    networks = tuple(
        Network(predict, SliceInferer(SliceSpec(axis, 1, 8, 1, margin=2), batch_size=4, workers=1), Path("stand-in"))
        for axis, predict in zip((0, 1, 2), predicts)
    )
    return BrainExtractor(networks, SPEC_1MM, margin_mm)


def _head(shape=(32, 32, 32)) -> tuple[np.ndarray, np.ndarray]:
    """A bright ball (the brain) with a dark cavity, a dim shell around it, a small bright blob apart."""
    grid = np.indices(shape).astype(np.float32)
    radius = np.sqrt(((grid - 15.5) ** 2).sum(axis=0))
    image = np.where(radius <= 14, 0.3, 0.0).astype(np.float32)  # the head
    brain = radius <= 9
    image[brain] = 1.0
    image[radius <= 2] = 0.3  # a dark ventricle: a hole in the bright mask
    image[1:4, 1:4, 1:4] = 1.0  # a small bright island outside the brain
    return image, brain


def test_extraction_keeps_the_largest_component_with_holes_filled() -> None:
    image, brain = _head()
    extraction = _extractor().extract(Image(image, np.eye(4)))
    mask = extraction.mask.array > 0
    assert np.array_equal(mask, brain)  # island dropped, cavity filled
    assert extraction.components == 2
    assert extraction.direction_agreement == 1.0
    assert extraction.volume_ml == pytest.approx(brain.sum() / 1000)


def test_the_shown_region_is_the_mask_grown_by_the_margin() -> None:
    image, brain = _head()
    shown = _extractor(margin_mm=3.0).extract(Image(image, np.eye(4))).shown.array > 0
    radius = np.sqrt(((np.indices(brain.shape) - 15.5) ** 2).sum(axis=0))
    assert shown[brain].all()
    assert shown[(radius > 9) & (radius <= 11.5)].all()
    assert not shown[radius > 13].any()


def test_grown_reaches_exactly_its_distance() -> None:
    mask = np.zeros((11, 11, 11), bool)
    mask[5, 5, 5] = True
    result = grown(mask, 3.0)
    assert result[5, 5, 8] and not result[5, 5, 9]  # distance 3 is in, 4 is out
    assert result[5, 7, 7] and not result[5, 8, 8]  # sqrt(8) in, sqrt(18) out
    assert np.array_equal(grown(mask, 0.0), mask)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1, 1, 0, 0], [1, 1, 0, 0], 1.0),
        ([1, 1, 0, 0], [0, 0, 1, 1], 0.0),
        ([1, 1, 0, 0], [1, 0, 0, 0], 2 / 3),
        ([0, 0, 0, 0], [0, 0, 0, 0], 1.0),
    ],
)
def test_direction_agreement_is_the_lowest_pairwise_dice(a, b, expected) -> None:
    assert direction_agreement([np.array(a, bool), np.array(b, bool)]) == pytest.approx(expected)
    assert direction_agreement([np.array(a, bool)]) == 1.0


def test_largest_filled_component_of_nothing_is_nothing() -> None:
    kept, count = largest_filled_component(np.zeros((4, 4, 4), bool))
    assert count == 0 and not kept.any()


def _tissue_network(batch: np.ndarray) -> np.ndarray:
    """Stand-in tissue network: anything above 0.1 is white matter (class 3), else background."""
    classes = np.where(batch[..., batch.shape[-1] // 2] > 0.1, 3, 0)
    return np.eye(4, dtype=np.float32)[classes]


SMALL_HEADS = QcConfig(min_brain_ml=1.0, plausible_brain_ml=(2.0, 10.0))  # 32 mm phantoms: a 3 mL "brain"


def _segmenter(extractor: BrainExtractor | None) -> Segmenter:
    network = Network(_tissue_network, SliceInferer(SliceSpec(2, 1, 8, 4, margin=2), batch_size=4, workers=1), Path("stand-in"))
    return Segmenter(SoftmaxHead((network,), 1), TISSUE, SPEC_1MM, InferenceConfig(workers=1, qc=SMALL_HEADS), extractor)


@pytest.mark.parametrize("with_scores", [False, True])
def test_labels_stay_inside_the_brain_mask(with_scores: bool) -> None:
    image, brain = _head()
    without = _segmenter(None).segment(Image(image, np.eye(4)), with_scores=with_scores)
    assert (without.labels.array[~brain] > 0).any()  # the whole head is "white matter" without extraction
    result = _segmenter(_extractor()).segment(Image(image, np.eye(4)), with_scores=with_scores)
    assert np.array_equal(result.labels.array > 0, brain & (image == 1.0))  # the dim ventricle is "background" to the stand-in
    assert result.brain is not None and result.qc is not None
    if with_scores:
        assert np.all(result.scores.array[~brain, 0] == 1.0)


def test_no_brain_found_is_refused() -> None:
    image = np.full((32, 32, 32), 0.3, np.float32)
    image[0, 0, 0] = 1.0  # contrast, but nothing the stand-in calls brain beyond one voxel
    with pytest.raises(ImageError, match=r"no brain found \(0 mL of brain, at least 1 mL expected\)"):
        _segmenter(_extractor()).segment(Image(image, np.eye(4) * np.array([4, 4, 4, 1])))


def test_python_m_training_attach_extractor(bundles: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from training.cli import main

    copy = Path(shutil.copytree(bundles["multi"], tmp_path / "multi"))
    assert main(["attach-extractor", "--extractor", str(bundles["single"]), str(copy)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0] and "single: not a brain extractor" in errors[0]
    assert main(["attach-extractor", "--extractor", str(bundles["brain"]), str(copy)]) == 0
    assert read_bundle_info(copy).brain_extractor is not None


# --- inputs that arrive skull-stripped ------------------------------------------------------------

STRIPPED = StrippedInput(min_background=0.5, max_brain_ml=10.0)  # 32 mm phantoms: a "brain" of a few mL


def _never_called(batch: np.ndarray) -> np.ndarray:
    raise AssertionError("the networks must not run on an input that arrived skull-stripped")


def _stripped_brain(shape=(32, 32, 32)) -> tuple[np.ndarray, np.ndarray]:
    """A brain as a stripping tool writes it: tissue (dark cortex outside, a darker ventricle inside) on exact zeros."""
    radius = np.sqrt(((np.indices(shape) - 15.5) ** 2).sum(axis=0))
    brain = radius <= 9
    image = np.where(brain, 0.4, 0.0).astype(np.float32)
    image[radius <= 6] = 1.0
    image[radius <= 2] = 0.2
    return image, brain


def _nothing_is_brain(batch: np.ndarray) -> np.ndarray:
    return np.zeros((*batch.shape[:-1], 1), np.float32)


DISAGREEING = (_bright_is_brain, _nothing_is_brain)
"""Stand-in directions that disagree, as the networks do on a brain that arrived stripped (agreement 0)."""


def test_a_stripped_input_is_its_nonzero_region(caplog: pytest.LogCaptureFixture) -> None:
    image, brain = _stripped_brain()
    image[1, 1, 1] = 0.5  # a speck left by the stripping tool
    extractor = BrainExtractor(_extractor(predicts=DISAGREEING).networks, SPEC_1MM, 3.0, STRIPPED)
    with caplog.at_level("INFO"):
        extraction = extractor.extract(Image(image, np.eye(4)))
    assert extraction.already_stripped and extraction.direction_agreement is None and extraction.components == 2
    assert np.array_equal(extraction.mask.array > 0, brain) and np.array_equal(extraction.shown.array, extraction.mask.array)
    assert extraction.grid_mask.sum() == brain.sum()  # the extractor's grid is the input's here (1 mm)
    assert "input already skull-stripped (exact zeros around 3 mL)" in caplog.text


def test_with_one_direction_a_stripped_input_runs_no_network() -> None:
    image, brain = _stripped_brain()
    extractor = BrainExtractor(_extractor(predicts=(_never_called,)).networks, SPEC_1MM, 3.0, STRIPPED)
    extraction = extractor.extract(Image(image, np.eye(4)))
    assert extraction.already_stripped and np.array_equal(extraction.mask.array > 0, brain)


@pytest.mark.parametrize("max_agreement", [0.5, 0.8, 1.0])
def test_zeros_around_a_head_whose_directions_agree_are_not_a_stripped_brain(max_agreement: float, caplog: pytest.LogCaptureFixture) -> None:
    image, _ = _stripped_brain()  # zeros around, small enough for a brain; both stand-in directions find the bright core
    rule = StrippedInput(STRIPPED.min_background, STRIPPED.max_brain_ml, max_agreement)
    extractor = BrainExtractor(_extractor(predicts=(_bright_is_brain,) * 2).networks, SPEC_1MM, 3.0, rule)
    with caplog.at_level("INFO"):
        extraction = extractor.extract(Image(image, np.eye(4)))
    radius = np.sqrt(((np.indices(image.shape) - 15.5) ** 2).sum(axis=0))
    assert not extraction.already_stripped and extraction.direction_agreement == 1.0  # exactly at the limit 1.0: a head
    assert np.array_equal(extraction.mask.array > 0, radius <= 6)  # the networks' brain, not the nonzero region
    assert "directions agree on a brain inside (1.00): a whole head" in caplog.text


def test_directions_agreeing_just_below_the_limit_leave_the_input_stripped() -> None:
    image, brain = _stripped_brain()
    rule = StrippedInput(STRIPPED.min_background, STRIPPED.max_brain_ml, 1.0)

    def one_voxel_more(batch: np.ndarray) -> np.ndarray:
        scores = _bright_is_brain(batch)
        scores[0, 15, 15, 0] = np.where(scores[0, 15, 15, 0] > 0, scores[0, 15, 15, 0], 1.0)
        return scores

    predicts = (_bright_is_brain, one_voxel_more)
    extractor = BrainExtractor(_extractor(predicts=predicts).networks, SPEC_1MM, 3.0, rule)
    extraction = extractor.extract(Image(image, np.eye(4)))
    assert extraction.already_stripped and np.array_equal(extraction.mask.array > 0, brain)


@pytest.mark.parametrize(
    ("background", "brain_ml", "stripped"),
    [
        (0.5, 4.0, True),  # exactly the share of exact-minimum voxels asked for
        (0.5 - 1 / 4096, 4.0, False),  # one voxel short
        (0.9, 10.0, True),  # exactly the largest brain
        (0.9, 10.001, False),  # a little larger: a whole head with zeroed air
    ],
)
def test_the_stripped_rule_at_its_limits(background: float, brain_ml: float, stripped: bool) -> None:
    shape = (16, 16, 16)  # 4096 voxels
    array = np.full(shape, -1.0, np.float32)  # the minimum need not be 0
    array.reshape(-1)[: round((1 - background) * array.size)] = 2.0  # one block of tissue: the first rows
    voxel_mm = (brain_ml * 1000.0 / np.count_nonzero(array == 2.0)) ** (1 / 3)
    found = stripped_brain(Image(array, np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])), STRIPPED)
    assert (found is not None) is stripped
    if found is not None:
        assert np.array_equal(found[0], array == 2.0) and found[1] == 1


def test_noisy_air_is_not_a_stripped_input() -> None:
    image, _ = _stripped_brain()
    image += np.random.default_rng(0).uniform(0.0, 0.02, image.shape).astype(np.float32)  # a scanner's air
    assert stripped_brain(Image(image, np.eye(4)), STRIPPED) is None


@pytest.mark.parametrize(
    ("min_background", "max_brain_ml", "max_agreement"),
    [(0.0, 10.0, 0.8), (1.5, 10.0, 0.8), (0.5, 0.0, 0.8), (0.5, float("nan"), 0.8), (0.5, 10.0, 0.0), (0.5, 10.0, 1.01)],
)
def test_the_stripped_rule_refuses_bad_limits(min_background: float, max_brain_ml: float, max_agreement: float) -> None:
    with pytest.raises(ValueError, match="Expected stripped_"):
        StrippedInput(min_background, max_brain_ml, max_agreement)


def test_qc_of_a_stripped_input_skips_the_shell_and_direction_checks() -> None:
    image, brain = _stripped_brain()
    extractor = BrainExtractor(_extractor(predicts=DISAGREEING).networks, SPEC_1MM, 3.0, STRIPPED)
    result = _segmenter(extractor).segment(Image(image, np.eye(4)))
    assert result.qc is not None and result.qc.measures["already_stripped"] == 1.0
    assert "direction_agreement" not in result.qc.measures and "brain_over_shell" not in result.qc.measures
    labelled = result.labels.array > 0
    assert not labelled[~brain].any() and labelled[image >= 0.4].all()  # the stand-in's white matter, inside the brain only


def test_from_info_takes_the_stripped_rule_from_the_settings(with_extractor: Path) -> None:
    settings = InferenceConfig(stripped_min_background=0.6, stripped_max_brain_ml=1234.0, stripped_max_agreement=0.7)
    extractor = Segmenter.from_bundle(with_extractor, settings).extractor
    assert extractor is not None and extractor.stripped == StrippedInput(0.6, 1234.0, 0.7)


def test_from_info_runs_the_slice_network_along_the_chosen_axes(with_extractor: Path) -> None:
    for axes in ((0, 1, 2), (0, 1), (2,)):
        extractor = Segmenter.from_bundle(with_extractor, InferenceConfig(extraction_axes=axes)).extractor
        assert extractor is not None and [network.inferer.spec.slice_axis for network in extractor.networks] == list(axes)
    for axes in ((), (0, 0), (3,), (True,), "01"):
        with pytest.raises(ConfigError, match=r"inference.extraction_axes .*Received"):
            Segmenter.from_bundle(with_extractor, InferenceConfig(extraction_axes=axes))  # type: ignore[arg-type]
