"""First-stage retrievers: each turns queries into a :data:`ragpipe.types.Run`."""
