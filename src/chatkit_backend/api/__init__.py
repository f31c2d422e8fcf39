"""HTTP: routes, dependencies, the error envelope and request normalising."""
