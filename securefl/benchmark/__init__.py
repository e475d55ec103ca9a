"""Benchmarks: `harness` (what every benchmark shares: run description, timing, JSON and
Markdown output), `grid` (`securefl bench`), `charts`, `tables` (result tables and the generated
blocks of the READMEs) and `numbers` (how tables write numbers). The scripts in `bench/` use
the same harness and hold only their own measurements and tables."""
