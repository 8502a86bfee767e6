"""Planning: one Service, its EndpointSlices, the Node and the settings -> a ServicePlan.

``service`` builds the plan; ``service_spec`` reads a Service object, ``endpoints`` its
EndpointSlices (readiness, topology), ``fields`` the typed field readers both use, and
``config`` the node- and settings-dependent inputs (``PlanConfig``).
"""

from ipvsproxy.core.plan.service import plan_service

__all__ = ["plan_service"]
