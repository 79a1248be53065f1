"""Side-by-side benchmarks of the provider against the tools a user would pick instead (see ``README.md``)."""
