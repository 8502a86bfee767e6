"""Feature-gate names kube-proxy accepts, and the check it makes of them (data, plus one function).

kube-proxy registers every Kubernetes feature gate in its binary (``DefaultFeatureGate``), so
``--feature-gates``/``featureGates`` accept any gate of its release and refuse any other name
(``unrecognized feature gate: X``). The names below are those of the newest release this proxy
follows, 1.36 (the generated feature list of that release, plus the gates kube-proxy adds from
component-base); research notes: /work/research/kubeproxy-config-flags.md §6 and Appendix A.
None of them changes what this proxy does: a known gate is accepted and has no effect.

Two differences from a 1.36 kube-proxy, both towards starting rather than refusing:
- gates that kube-proxy itself read in an older release (1.19 on) and that later releases
  removed are accepted with a warning, because configs written then (kubeadm 1.19 copies
  IPv6DualStack into the file) should keep loading;
- of the gates locked in 1.36 only the ones the research names are known to be locked, so a
  locked gate not in ``LOCKED_ON`` is accepted at any value.
"""

from __future__ import annotations

from collections.abc import Iterable

from ipvsproxy.config.errors import ConfigError
from ipvsproxy.config.values import parse_bool

NEWEST_RELEASE = "1.36"

# The 1.36 feature list (test/compatibility_lifecycle/reference/feature_list.md), 210 names.
KUBERNETES_GATES = frozenset(
    """
    APIResponseCompression APIServerIdentity APIServerTracing APIServingWithRoutine
    AggregatedDiscoveryRemoveBetaType AllowDNSOnlyNodeCSR
    AllowInsecureKubeletCertificateSigningRequests AllowOverwriteTerminationGracePeriodSeconds
    AllowParsingUserUIDFromCertAuth AllowUnsafeMalformedObjectDeletion
    AnonymousAuthConfigurableEndpoints AnyVolumeDataSource AtomicFIFO AuthorizeNodeWithSelectors
    AuthorizePodWebsocketUpgradeCreatePermission AuthorizeWithSelectors BtreeWatchCache
    CBORServingAndStorage CPUManagerPolicyAlphaOptions CPUManagerPolicyBetaOptions
    CPUManagerPolicyOptions CRDObservedGenerationTracking CRDValidationRatcheting
    CSIServiceAccountTokenSecrets CSIVolumeHealth ChangeContainerStatusOnKubeletRestart
    ClearingNominatedNodeNameAfterBinding ClientsAllowCBOR ClientsPreferCBOR
    CloudControllerManagerWatchBasedRoutesReconciliation CloudControllerManagerWebhook
    ClusterTrustBundle ClusterTrustBundleProjection ComponentFlagz ComponentStatusz
    ConcurrentWatchObjectDecode ConsistentListFromCache ConstrainedImpersonation
    ContainerCheckpoint ContainerRestartRules ContainerStopSignals CoordinatedLeaderElection
    CrossNamespaceVolumeDataSource CustomCPUCFSQuotaPeriod CustomResourceFieldSelectors
    DRAAdminAccess DRAConsumableCapacity DRADeviceBindingConditions DRADeviceTaintRules
    DRADeviceTaints DRAExtendedResource DRAPartitionableDevices DRAPrioritizedList
    DRAResourceClaimDeviceStatus DRASchedulerFilterTimeout DeclarativeValidation
    DeclarativeValidationTakeover DeploymentReplicaSetTerminatingReplicas
    DetectCacheInconsistency DisableAllocatorDualWrite DisableCPUQuotaWithExclusiveCPUs
    DisableNodeKubeProxyVersion DynamicResourceAllocation EnvFiles EventedPLEG ExecProbeTimeout
    ExternalServiceAccountTokenSigner GangScheduling GenericWorkload GitRepoVolumeDriver
    GracefulNodeShutdown GracefulNodeShutdownBasedOnPodPriority HPAConfigurableTolerance
    HPAScaleToZero HonorPVReclaimPolicy HostnameOverride ImageMaximumGCAge ImageVolume
    ImageVolumeWithDigest InOrderInformers InOrderInformersBatchProcess
    InPlacePodLevelResourcesVerticalScaling InPlacePodVerticalScaling
    InPlacePodVerticalScalingAllocatedStatus InPlacePodVerticalScalingExclusiveCPUs
    InPlacePodVerticalScalingExclusiveMemory InformerResourceVersion JobBackoffLimitPerIndex
    JobManagedBy JobPodReplacementPolicy JobSuccessPolicy KMSv1 KubeletCgroupDriverFromCRI
    KubeletCrashLoopBackOffMax KubeletEnsureSecretPulledImages KubeletFineGrainedAuthz
    KubeletInUserNamespace KubeletPSI KubeletPodResourcesDynamicResources KubeletPodResourcesGet
    KubeletPodResourcesListUseActivePods KubeletRegistrationGetOnExistsOnly
    KubeletSeparateDiskGC KubeletServiceAccountTokenForCredentialProviders KubeletTracing
    ListFromCacheSnapshot LocalStorageCapacityIsolationFSQuotaMonitoring LogarithmicScaleDown
    MatchLabelKeysInPodAffinity MatchLabelKeysInPodTopologySpread
    MatchLabelKeysInPodTopologySpreadSelectorMerge MaxUnavailableStatefulSet MemoryQoS
    MultiCIDRServiceAllocator MutableCSINodeAllocatableCount MutablePVNodeAffinity
    MutablePodResourcesForSuspendedJobs MutableSchedulingDirectivesForSuspendedJobs
    MutatingAdmissionPolicy NFTablesProxyMode NodeDeclaredFeatures
    NodeInclusionPolicyInPodTopologySpread NodeLogQuery NodeSwap NominatedNodeNameForExpectation
    OpenAPIEnums OpportunisticBatching OrderedNamespaceDeletion PodAndContainerStatsFromCRI
    PodCertificateRequest PodDeletionCost PodLevelResources PodLifecycleSleepAction
    PodLifecycleSleepActionAllowZero PodLogsQuerySplitStreams PodObservedGenerationTracking
    PodReadyToStartContainersCondition PodSchedulingReadiness PodTopologyLabelsAdmission
    PortForwardWebsockets PreferSameTrafficDistribution PreventStaticPodAPIReferences
    ProcMountType QOSReserved RecoverVolumeExpansionFailure RecursiveReadOnlyMounts
    ReduceDefaultCrashLoopBackOffDecay RelaxedDNSSearchValidation
    RelaxedEnvironmentVariableValidation RelaxedServiceNameValidation
    ReloadKubeletServerCertificateFile RemoteRequestHeaderUID ResilientWatchCacheInitialization
    ResourceHealthStatus ResourceHealthStatusMessage RestartAllContainersOnContainerExits
    RetryGenerateName RotateKubeletServerCertificate RuntimeClassInImageCriApi
    SELinuxChangePolicy SELinuxMount SELinuxMountReadWriteOncePod SchedulerAsyncAPICalls
    SchedulerAsyncPreemption SchedulerPopFromBackoffQ SchedulerQueueingHints
    SeparateCacheWatchRPC SeparateTaintEvictionController ServiceAccountNodeAudienceRestriction
    ServiceAccountTokenJTI ServiceAccountTokenNodeBinding
    ServiceAccountTokenNodeBindingValidation ServiceAccountTokenPodNodeInfo SidecarContainers
    SizeBasedListCostEstimate StatefulSetSemanticRevisionComparison StorageCapacityScoring
    StorageNamespaceIndex StorageVersionAPI StorageVersionHash StorageVersionMigrator
    StreamingCollectionEncodingToJSON StreamingCollectionEncodingToProtobuf
    StrictIPCIDRValidation StructuredAuthenticationConfiguration
    StructuredAuthenticationConfigurationEgressSelector
    StructuredAuthenticationConfigurationJWKSMetrics SupplementalGroupsPolicy SystemdWatchdog
    TaintTolerationComparisonOperators TokenRequestServiceAccountUIDValidation
    TopologyManagerPolicyAlphaOptions TopologyManagerPolicyBetaOptions
    TopologyManagerPolicyOptions TranslateStreamCloseWebsocketRequests
    UnauthenticatedHTTP2DOSMitigation UnknownVersionInteroperabilityProxy
    UnlockWhileProcessingFIFO UserNamespacesHostNetworkSupport UserNamespacesSupport
    VolumeAttributesClass VolumeLimitScaling WatchCacheInitializationPostStartHook WatchList
    WatchListClient WinDSR WinOverlay WindowsCPUAndMemoryAffinity WindowsGracefulNodeShutdown
    WindowsHostNetwork
    """.split()  # noqa: SIM905 (210 names read better as a block of words)
)

# Added by kube-proxy's own init: component-base logging and metrics gates, and the two
# switches that turn every alpha or beta gate on.
COMPONENT_GATES = frozenset(
    (
        "AllAlpha",
        "AllBeta",
        "ContextualLogging",
        "LoggingAlphaOptions",
        "LoggingBetaOptions",
        "LoggingStableOptions",
        "NativeHistograms",
    )
)

KNOWN_GATES = KUBERNETES_GATES | COMPONENT_GATES

# Locked to true in 1.36 (GA): setting one to false is refused, as kube-proxy refuses it.
LOCKED_ON = frozenset(
    (
        "APIServerTracing",
        "AnyVolumeDataSource",
        "AuthorizeNodeWithSelectors",
        "AuthorizeWithSelectors",
        "BtreeWatchCache",
        "CPUManagerPolicyOptions",
        "ConsistentListFromCache",
        "DisableAllocatorDualWrite",
        "DynamicResourceAllocation",
        "ExecProbeTimeout",
        "InPlacePodVerticalScaling",
        "JobManagedBy",
        "KubeletFineGrainedAuthz",
        "MultiCIDRServiceAllocator",
        "NFTablesProxyMode",
        "NodeSwap",
        "PreferSameTrafficDistribution",
        "SidecarContainers",
        "VolumeAttributesClass",
        "WinDSR",
        "WinOverlay",
    )
)

# Gates kube-proxy read in 1.19 or later that are gone from 1.36: accepted, with a warning.
REMOVED_PROXY_GATES = frozenset(
    (
        "EndpointSliceProxying",
        "IPTablesOwnershipCleanup",
        "IPv6DualStack",
        "KubeProxyDrainingTerminatingNodes",
        "MinimizeIPTablesRestore",
        "ProxyTerminatingEndpoints",
        "ServiceInternalTrafficPolicy",
        "ServiceTopology",
        "TopologyAwareHints",
        "WindowsEndpointSliceProxying",
    )
)


def check_gates(gates: Iterable[tuple[str, bool]], setting: str) -> tuple[str, ...]:
    """Refuse what kube-proxy refuses (an unknown name, a locked gate set off), naming
    ``setting`` and the first bad gate; return the removed gates that were accepted."""
    removed = []
    for name, enabled in gates:
        if name in REMOVED_PROXY_GATES:
            removed.append(name)
        elif name not in KNOWN_GATES:
            raise ConfigError(f"{setting}: unrecognized feature gate: {name}")
        elif name in LOCKED_ON and not enabled:
            raise ConfigError(
                f"{setting}: cannot set feature gate {name} to false, feature is locked to true"
            )
    return tuple(removed)


def parse_gates(text: str) -> tuple[tuple[str, bool], ...]:
    """``--feature-gates`` as component-base's mapStringBool reads it: ``A=true,B=false``;
    empty items are skipped, key and value trimmed, the value in strconv.ParseBool's forms.
    Raises ValueError with kube-proxy's wording."""
    pairs = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"malformed pair, expect string=bool: {item!r}")
        key, value = key.strip(), value.strip()
        try:
            pairs.append((key, parse_bool(value)))
        except ValueError:
            raise ValueError(f"invalid value of {key}: {value}") from None
    return tuple(pairs)
