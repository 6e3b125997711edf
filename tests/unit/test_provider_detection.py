"""Which provider a delivery is routed to, by headers alone, in the documented order."""

from __future__ import annotations

import pytest

from controller import providers
from controller.providers.base import WebhookRequest


def request(**headers: str) -> WebhookRequest:
    return WebhookRequest("POST", {k.lower().replace("_", "-"): v for k, v in headers.items()}, b"{}")


def test_providers_are_listed_in_detection_order_with_their_secret_keys() -> None:
    assert [(p.name, p.secret_keys) for p in providers.PROVIDERS] == [
        ("gitea", ("gitea",)),
        ("gogs", ("gogs",)),
        ("github", ("github",)),
        ("gitlab", ("gitlab",)),
        ("bitbucket", ("bitbucket",)),
        ("bitbucket-server", ("bitbucket-server",)),
        ("azure-devops", ("azure-username", "azure-password")),
        ("generic", ("generic",)),
    ]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # Gitea and Forgejo also send X-Gogs-* and X-GitHub-* headers: they must win over both.
        ({"X_Gitea_Event": "push", "X_Gogs_Event": "push", "X_GitHub_Event": "push"}, "gitea"),
        ({"X_Forgejo_Event": "push", "X_Gitea_Event": "push", "X_GitHub_Event": "push"}, "gitea"),
        ({"X_Forgejo_Event": "push"}, "gitea"),
        ({"X_Gogs_Event": "push", "X_GitHub_Event": "push"}, "gogs"),
        ({"X_GitHub_Event": "push"}, "github"),
        ({"X_Gitlab_Event": "Push Hook"}, "gitlab"),
        ({"X_Event_Key": "repo:push", "X_Hook_UUID": "8c2f5e1a"}, "bitbucket"),
        ({"X_Event_Key": "repo:push", "X_Request_UUID": "1f6a0c3e"}, "bitbucket"),
        ({"X_Event_Key": "repo:push", "User_Agent": "Bitbucket-Webhooks/2.0"}, "bitbucket"),
        ({"X_Event_Key": "repo:refs_changed", "X_Request_Id": "e4c2a1b0"}, "bitbucket-server"),
        (
            {"X_Event_Key": "repo:refs_changed", "User_Agent": "Atlassian HttpClient 4.2.0"},
            "bitbucket-server",
        ),
        ({"X_Vss_ActivityId": "8e0f2a4c"}, "azure-devops"),
        ({"X_Vss_SubscriptionId": "7d1a3c5e"}, "azure-devops"),
        ({"X_Fleet_Webhook_Signature": "sha256=00"}, "generic"),
        ({"X_Fleet_Webhook_Event": "ping"}, "generic"),
    ],
)
def test_detect_picks_the_first_matching_provider(headers: dict[str, str], expected: str) -> None:
    found = providers.detect(request(**headers))
    assert found is not None
    assert found.name == expected


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Content_Type": "application/json", "User_Agent": "curl/8.9.1"},
        {"X_GitHub_Event": "  "},  # blank values do not count
        {"X_Request_UUID": "1f6a0c3e"},  # Bitbucket Cloud's delivery id alone is not an event
    ],
)
def test_detect_returns_none_for_unknown_senders(headers: dict[str, str]) -> None:
    assert providers.detect(request(**headers)) is None


@pytest.mark.parametrize("provider", providers.PROVIDERS, ids=lambda p: p.name)
def test_by_name_returns_the_registered_instance(provider: providers.Provider) -> None:
    assert providers.by_name(provider.name) is provider


def test_by_name_rejects_unknown_names_and_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"gerrit.*known providers: gitea, gogs, github"):
        providers.by_name("gerrit")
