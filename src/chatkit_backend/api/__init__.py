"""HTTP: routes, the services they use, middleware, errors, request parsing, streaming."""
