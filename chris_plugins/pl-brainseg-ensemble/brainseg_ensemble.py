"""ChRIS plugin: brain tissue segmentation (CSF, gray matter, white matter) with an ensemble of single-class networks."""

from pathlib import Path

from chris_plugin import chris_plugin

from inference.plugin import build_parser, bundle_path, run_plugin

__version__ = "0.1.0"

parser = build_parser(
    "Segments T1-weighted brain MRI volumes (NIfTI or MGZ, any orientation and voxel size) into CSF, gray matter "
    "and white matter with three single-class (sigmoid) U-Nets, one per tissue, fused into one label map. Writes, "
    "next to each input's relative path: the label map on the input's grid, the structure volumes (CSV and JSON, "
    "mm^3) and a QC picture."
)
parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")


@chris_plugin(
    parser=parser,
    title="Brain tissue segmentation (ensemble of single-class networks)",
    category="MRI",
    min_memory_limit="3Gi",  # measured peak RSS 1.40 GiB (MNI152 T1), 1.93 GiB (256^3 with --probabilities)
    # The largest accepted input (PreprocessConfig.max_voxels = 512^3): peak RSS 7.39 GiB (512^3 at 1 mm,
    # --probabilities; 5.83 GiB at 0.5 mm), plus 50 % for what inference adds (README, Resources).
    max_memory_limit="14Gi",
    min_cpu_limit="2000m",
    max_cpu_limit="8000m",  # TensorFlow's pools follow the job's CPU quota; past ~8 cores the serial NumPy stages dominate
    min_gpu_limit=0,
    max_gpu_limit=0,
)
def main(options, inputdir: Path, outputdir: Path) -> int:
    """Segment every matching volume under ``inputdir``; outputs mirror its folders under ``outputdir``.

    `run_plugin` prepares the environment (HOME, KERAS_HOME, MPLCONFIGDIR) before TensorFlow or
    matplotlib is imported; importing this module sets nothing.
    """
    return run_plugin(options, inputdir, outputdir, bundle_path("tissue-ensemble"), "pl-brainseg-ensemble")


if __name__ == "__main__":
    main()
