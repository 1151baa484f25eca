"""Code of the published CLIBD, copied verbatim with its licence, for fidelity tests."""
