"""Clinical decision support: CDS Hooks 2.0 service, server re-check of orders, signed knowledge bundles."""
