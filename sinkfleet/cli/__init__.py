"""The `sinkfleet` command line: ``base`` (shared helpers, a leaf), ``app`` (the root
app that registers every command group) and one module per command group."""
