"""`ManifestError`, in a module of its own: the manifest checks, the overrides and the tracker checks all
raise it, and none of them has to import another for it (which made an import circle inside `pipeline`)."""


class ManifestError(ValueError):
    """A manifest problem, phrased as one line that names the stage and the field."""
