"""The tests' own infrastructure: a pytest plugin (``plugin``, registered in pyproject.toml),
real registries with TLS, auth and access-log counting (``registry``), and images pushed
with archlift's own client (``images``)."""
