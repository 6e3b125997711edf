"""Every git provider fleet-webhook understands, in the order they are detected.

`detect` asks each provider in `PROVIDERS` in turn whether the request's headers are its own; the
first that says yes handles the delivery. The order matters because hosts copy each other's headers:

1. gitea       `X-Gitea-Event` or `X-Forgejo-Event`. Gitea and Forgejo also send `X-Gogs-*` and
               `X-GitHub-*` headers, so they must be recognised before Gogs and GitHub.
2. gogs        `X-Gogs-Event`. Before GitHub, as in Fleet (whose parser notes that Gogs "carries both
               Gogs and (incompatible) GitHub headers"): its signature is bare hex over the JSON,
               not GitHub's `sha256=` over the raw body, so the GitHub provider would reject it.
3. github      `X-GitHub-Event`.
4. gitlab      `X-Gitlab-Event`.
5. bitbucket   Bitbucket Cloud: `X-Hook-UUID`, or `X-Event-Key` with `X-Request-UUID` or a
               `Bitbucket-Webhooks` User-Agent. Checked before Bitbucket Server, which shares
               `X-Event-Key`.
6. bitbucket-server  `X-Event-Key` (sent with `X-Request-Id`).
7. azure-devops      `X-Vss-ActivityId` or `X-Vss-SubscriptionId` (header based; the body's
               `eventType` is read only by parse).
8. generic     `X-Fleet-Webhook-Signature` or `X-Fleet-Webhook-Event`; last, as our own format never
               collides with a host's headers.
"""

from __future__ import annotations

from controller.providers.azure_devops import AzureDevOpsProvider
from controller.providers.base import Provider, WebhookRequest
from controller.providers.bitbucket import BitbucketCloudProvider
from controller.providers.bitbucket_server import BitbucketServerProvider, complete_urls
from controller.providers.generic import GenericProvider
from controller.providers.gitea import GiteaProvider
from controller.providers.github import GitHubProvider
from controller.providers.gitlab import GitLabProvider
from controller.providers.gogs import GogsProvider

__all__ = [
    "PROVIDERS",
    "PROVIDER_NAMES",
    "SECRET_KEYS",
    "UNRECOGNIZED",
    "AzureDevOpsProvider",
    "BitbucketCloudProvider",
    "BitbucketServerProvider",
    "GenericProvider",
    "GitHubProvider",
    "GitLabProvider",
    "GiteaProvider",
    "GogsProvider",
    "Provider",
    "WebhookRequest",
    "by_name",
    "complete_urls",
    "detect",
]

PROVIDERS: tuple[Provider, ...] = (
    GiteaProvider(),
    GogsProvider(),
    GitHubProvider(),
    GitLabProvider(),
    BitbucketCloudProvider(),
    BitbucketServerProvider(),
    AzureDevOpsProvider(),
    GenericProvider(),
)
"""One instance of each provider with default options, in detection order."""

_BY_NAME = {provider.name: provider for provider in PROVIDERS}

PROVIDER_NAMES: tuple[str, ...] = tuple(_BY_NAME)
"""Every provider's config key, in detection order."""

SECRET_KEYS: tuple[str, ...] = tuple(
    dict.fromkeys(
        key for provider in PROVIDERS for key in (*provider.secret_keys, *sum(provider.fallback_secret_keys, ()))
    )
)
"""Every key a provider reads from a webhook Secret."""


def _unrecognized() -> str:
    names = list(dict.fromkeys(h for provider in PROVIDERS for h in provider.detect_headers))
    return "not a recognized webhook: none of the headers " + ", ".join(names[:-1]) + " or " + names[-1]


UNRECOGNIZED = _unrecognized()
"""The answer to a delivery no provider claims: which headers would have named one."""


def detect(request: WebhookRequest) -> Provider | None:
    """The first provider (in `PROVIDERS` order) whose headers the request carries, or None."""
    for provider in PROVIDERS:
        if provider.detect(request):
            return provider
    return None


def by_name(name: str) -> Provider:
    """The provider called `name` (its config key, e.g. "bitbucket-server"); KeyError names the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown provider {name!r}; known providers: {', '.join(_BY_NAME)}") from None
