"""I/O adapters: the only part of pyclient allowed to touch crypto libraries, storage or JS."""
