"""OCI container images of pylos apps: `pylos oci build` and `pylos oci import`."""
