"""Redis Cluster behind Django's cache: REDIS_URL=redis+cluster://HOST:PORT names one node of it.

django-redis has no cluster client of its own, but its DefaultClient only needs a
client object with the commands it calls, and redis-py's RedisCluster is one: each
single-key command goes to the primary serving the key's slot, and multi-key ones
(get_many, delete_many) work when their keys share a hash tag, as the rate
limiter's counters of one caller do (chat.throttles.Limit.key). This factory hands
django-redis a RedisCluster instead of a Redis; it discovers the other nodes from
the one named and follows slot moves and failovers.

A cluster has only database 0: the cache's KEY_PREFIX keeps deployments apart.
"""

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured
from django_redis.pool import ConnectionFactory
from redis._parsers.commands import CommandPolicies, RequestPolicy, ResponsePolicy
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.commands.policies import BasePolicyResolver, PolicyResolver, StaticPolicyResolver
from redis.retry import Retry

SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

# A command that meets a dead or moved node refreshes the slot table and is retried
# this often, briefly: during a failover the limiter should fail open within a
# request's time, not sleep redis-py's default of up to 10 retries of 1 s.
RETRIES = 2
RETRY_BACKOFF = (0.01, 0.1)  # seconds: base and cap


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in SCHEMES


def node_url(url: str) -> str:
    """redis+cluster://host:port[/0] -> redis://host:port/0 (the seed node, as redis-py wants it)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ImproperlyConfigured(f"not a Redis Cluster URL (redis+cluster://HOST:PORT): {url!r}")
    if "," in parts.netloc:
        raise ImproperlyConfigured("name one node of the cluster in REDIS_URL: the others are discovered")
    db = parts.path.strip("/")
    if db not in {"", "0"}:
        raise ImproperlyConfigured(f"a Redis Cluster has only database 0, not {db!r}; use CACHE_KEY_PREFIX")
    return urlunsplit((SCHEMES[parts.scheme], parts.netloc, "/0", parts.query, ""))


def all_node_urls(seed_url: str, cluster_nodes: str | bytes) -> list[str]:
    """The seed's URL, then one of the same form for every other live node that CLUSTER NODES lists."""
    if isinstance(cluster_nodes, bytes):
        cluster_nodes = cluster_nodes.decode()
    seed = urlsplit(seed_url)
    urls = [seed_url]
    for line in cluster_nodes.splitlines():
        fields = line.split()
        if len(fields) < 3 or "fail" in fields[2] or "noaddr" in fields[2]:
            continue
        address = fields[1].split("@", 1)[0]  # ip:port@cluster-bus-port
        credentials = seed.netloc.rpartition("@")[0]
        url = urlunsplit(
            (seed.scheme, f"{credentials}@{address}" if credentials else address, seed.path, seed.query, "")
        )
        if url not in urls:
            urls.append(url)
    return urls


class EvalByKeys(BasePolicyResolver):
    """Route EVAL and EVALSHA by the keys they name, as a plain command of the cluster client does.

    Without it, redis-py's cluster pipeline asks a node which keys each queued EVAL
    touches (COMMAND GETKEYS): one more round trip for every limited request
    (measured in tests/test_redis_cluster.py).
    """

    KEYED = CommandPolicies(request_policy=RequestPolicy.DEFAULT_KEYED, response_policy=ResponsePolicy.DEFAULT_KEYED)

    def __init__(self, fallback: PolicyResolver | None = None):
        super().__init__({"core": {"eval": self.KEYED, "evalsha": self.KEYED}}, fallback or StaticPolicyResolver())

    def with_fallback(self, fallback: PolicyResolver) -> PolicyResolver:
        return EvalByKeys(fallback)


class ChatRedisCluster(RedisCluster):
    """redis-py's cluster client whose pipelines keep its command routing (EvalByKeys)."""

    def pipeline(self, transaction=None, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        pipe._policy_resolver = self._policy_resolver  # pipeline() does not pass it on (redis-py 8.1)
        return pipe


class ClusterConnectionFactory(ConnectionFactory):
    """django-redis's factory, making one RedisCluster per URL and process (it pools per node itself)."""

    _clusters: dict[str, ChatRedisCluster] = {}

    def connect(self, url: str) -> RedisCluster:
        if url not in self._clusters:
            options: dict[str, Any] = {
                "retry": Retry(ExponentialWithJitterBackoff(*RETRY_BACKOFF), RETRIES),
                "policy_resolver": EvalByKeys(),
            }
            if self.options.get("SOCKET_TIMEOUT"):
                options["socket_timeout"] = self.options["SOCKET_TIMEOUT"]
            if self.options.get("SOCKET_CONNECT_TIMEOUT"):
                options["socket_connect_timeout"] = self.options["SOCKET_CONNECT_TIMEOUT"]
            for name in ("USERNAME", "PASSWORD"):
                if self.options.get(name):
                    options[name.lower()] = self.options[name]
            self._clusters[url] = ChatRedisCluster.from_url(node_url(url), **options)
        return self._clusters[url]

    def disconnect(self, connection: RedisCluster) -> None:
        connection.disconnect_connection_pools()
