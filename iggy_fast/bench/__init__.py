"""`iggy-fast bench`: load generator and latency recorder, in the spirit of iggy-bench."""
