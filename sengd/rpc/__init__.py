"""Control plane: the Unix-socket JSON-RPC server and its methods."""
