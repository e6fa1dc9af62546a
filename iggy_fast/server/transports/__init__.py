"""Transport adapters: each moves bytes between its sockets and the connection driver."""
