"""Everything outside the containers: settings, the pipeline and its gate, the platforms, the CLI."""
