"""The kernel, one interface per subsystem: real implementations and in-memory fakes."""
