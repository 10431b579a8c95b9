"""The `mfm` console command: one table of subcommands, each a `main(argv)` in its own package."""
