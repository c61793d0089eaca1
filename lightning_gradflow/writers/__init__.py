"""Backend adapters; each imports its backend lazily, so none is needed to import the library."""
