"""`sinkfleet stats`: storage per sink, lag per group, Redis keys and memory per sink."""
