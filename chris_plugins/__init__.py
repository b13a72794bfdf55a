"""ChRIS plugin packages (one folder each) and the tooling of their descriptors."""
