"""The verbs that write preload lists: from manifests, from the cluster, from what a node runs."""

from __future__ import annotations

from agent.cli import flags
from agent.cli.common import cri_endpoint_arg, seconds_arg
from agent.cli.verb import Commands, Verb, subcommand


def from_manifests(commands: Commands) -> None:
    sub = subcommand(
        commands,
        "from-manifests",
        "write a preload list from Kubernetes manifests: every container image nodes keep",
        "  kubectl get pods,deploy,sts,ds,cronjobs,jobs -A -o yaml | prepull-agent "
        "from-manifests -\n"
        "  helm template my-release ./chart | prepull-agent from-manifests - --output-file "
        "preload.yaml\n"
        "  prepull-agent from-manifests k8s/ --output-file preload.yaml && prepull-agent lock "
        "--config preload.yaml --output-file preload.lock.yaml",
        "exit codes: 0 written (warnings on stderr), 2 bad input (file and line named)",
    )
    sub.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="YAML or JSON files, directories (read recursively), or - for stdin",
    )
    flags.output_file(sub, "the list")
    flags.format(sub, ("yaml", "json"), "the list, commented", "the same list as one JSON document")
    sub.set_defaults(command=Verb("lists", "from_manifests"))


def suggest(commands: Commands) -> None:
    sub = subcommand(
        commands,
        "suggest",
        "write a preload list from what this node runs now, pinned to the digests running",
        "  prepull-agent suggest > preload.yaml\n"
        "  prepull-agent suggest --cri-endpoint unix:///run/k3s/containerd/containerd.sock",
        "exit codes: 0 written, 1 the runtime cannot be asked",
    )
    cri_endpoint_arg(sub)
    flags.output_file(sub, "the list")
    flags.format(sub, ("yaml", "json"), "the list, commented", "the same list as one JSON document")
    sub.set_defaults(command=Verb("lists", "suggest"))


def from_cluster(commands: Commands) -> None:
    sub = subcommand(
        commands,
        "from-cluster",
        "write a preload list from the cluster's workloads and capacity buffers, read through "
        "the API server",
        "  prepull-agent from-cluster -A > preload.yaml\n"
        "  prepull-agent from-cluster -n shop -l tier=web --lock --output-file preload.yaml\n"
        "  prepull-agent from-cluster -A --node-selector karpenter.sh/nodepool=gpu\n"
        "  prepull-agent from-cluster -A --lock --configmap prepull-system/prepull-agent-config",
        "exit codes: 0 written or unchanged (warnings on stderr), 1 the API server or a registry "
        "(--lock) refused, or the ConfigMap's list held (--max-drop), 2 bad input",
    )
    sub.add_argument("--kubeconfig", help="the kubeconfig (default: KUBECONFIG, ~/.kube/config)")
    sub.add_argument("--context", help="the kubeconfig context (default: its current-context)")
    where = sub.add_mutually_exclusive_group()
    where.add_argument("-n", "--namespace", default="default", help="the namespace to read")
    where.add_argument("-A", "--all-namespaces", action="store_true", help="read every namespace")
    sub.add_argument("-l", "--selector", metavar="SELECTOR", help="only objects with these labels")
    sub.add_argument(
        "--field-selector", metavar="SELECTOR", help="only objects these fields select"
    )
    sub.add_argument(
        "--node-selector",
        metavar="LABELS",
        help="only the images of pods that may run on nodes with these labels (k=v,k2=v2; "
        "nodeSelector and required node affinity): one list per node pool",
    )
    sub.add_argument(
        "--lock", action="store_true", help="resolve every tag to its digest now, as lock does"
    )
    flags.hosts_dir(sub)
    sub.add_argument(
        "--configmap",
        metavar="NAMESPACE/NAME",
        help="apply the list to this ConfigMap (server-side apply, field manager "
        "prepull-from-cluster) instead of printing it; unchanged: nothing is written",
    )
    sub.add_argument(
        "--key", default="preload.yaml", help="the ConfigMap's key (default preload.yaml)"
    )
    sub.add_argument(
        "--max-drop",
        type=float,
        default=50.0,
        metavar="PERCENT",
        help="with --configmap: hold (write nothing, exit 1) a list that would drop more than "
        "this share of the images listed now (default 50)",
    )
    sub.add_argument(
        "--watch",
        action="store_true",
        help="with --configmap: keep it current, watching every kind for changes (runs until "
        "stopped)",
    )
    sub.add_argument(
        "--debounce",
        type=seconds_arg(0.0),
        default=10.0,
        metavar="SECONDS",
        help="with --watch: wait this long after a change for more before writing (default 10)",
    )
    sub.add_argument(
        "--resync",
        type=seconds_arg(1.0),
        default=600.0,
        metavar="SECONDS",
        help="with --watch: list everything again this often even without a change (default 600)",
    )
    sub.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="with --watch: serve Prometheus metrics here (e.g. 0.0.0.0:9411)",
    )
    flags.output_file(sub, "the list")
    flags.format(sub, ("yaml", "json"), "the list, commented", "the same list as one JSON document")
    sub.set_defaults(command=Verb("lists", "from_cluster"))
