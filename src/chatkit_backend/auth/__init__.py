"""Who is calling: bearer-token verification, JWKS keys, roles and minting dev tokens."""
