"""The iggy-fast server: state, storage, command handlers and transports."""
