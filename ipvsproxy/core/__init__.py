"""The pure core: Kubernetes objects in, kernel operations out, and nothing else.

Planning (``plan``) turns a Service, its EndpointSlices and the Node into the kernel
objects it needs; ``desired`` keeps every Service's plan and who claims what;
``ownership`` says which kernel objects are the proxy's; ``diff`` turns observed and
desired state into ``ops``; ``apply`` computes what those ops do to a state; ``mirror``
keeps the proxy's picture of the kernel between reads. No module here does I/O,
reads a clock or imports anything outside this package and the standard library
(checked by the import contracts in ``tox -e lint``).
"""
