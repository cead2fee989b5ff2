"""Attestation: RA-TLS client certificate -> verified `Evidence` (pure; no I/O but trust anchors).

Public entry points are re-exported here once implemented: `verify_certificate`, `Evidence`,
`AttestationError`, `Reason`, `TrustConfig`.
"""
