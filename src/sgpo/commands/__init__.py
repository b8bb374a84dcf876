"""One module per `sgpo` sub-command; each exposes `main(argv) -> int`."""
