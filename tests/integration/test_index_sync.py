"""The GitRepo list is read in pages and converted page by page; the index sees every object once."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from controller.index import gitrepo_info
from controller.kube import GROUP, PLURAL, VERSION, Kube, load_api_client


async def test_paged_list_returns_every_gitrepo_converted(
    control_plane: Any, kube_api: client.ApiClient, namespace: str
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    for i in range(7):
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GitRepo",
            "metadata": {"name": f"g{i}"},
            "spec": {"repo": f"https://github.com/o/r{i}"},
        }
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    kube = Kube(load_api_client(control_plane.kubeconfig))
    try:
        infos, rv = await kube.list_gitrepos(namespace, convert=gitrepo_info, page_size=3)
        raw, _ = await kube.list_gitrepos(namespace, page_size=2)
    finally:
        kube.close()
    assert rv.isdigit()
    assert sorted(i.name for i in infos if i is not None) == [f"g{i}" for i in range(7)]
    assert len(raw) == 7
    assert all(item["kind"] == "GitRepo" for item in raw)
