"""E2B (seed 001) driven by the generated async `SessionsApi` of the `e2b` 0.1.0 package,
unmodified, pointed at corral's `/e2b` mount."""

import asyncio
import uuid

import pytest
import requests
from e2b.api.client import ApiClient, ApiException, Configuration, NewSession, SessionsApi


def run(server, scenario):
    async def main():
        configuration = Configuration(host=server.url("/e2b"))
        async with ApiClient(configuration) as client:
            return await scenario(SessionsApi(client))

    return asyncio.run(main())


def test_the_client_creates_lists_refreshes_and_deletes(server):
    async def scenario(api):
        created = await api.sessions_post(NewSession(codeSnippetID="snip2", editEnabled=False))
        listed = await api.sessions_get(api_key="any-key-in-open-mode")
        await api.sessions_session_id_refresh_post(created.session_id)
        await api.sessions_session_id_delete(api_key="any-key-in-open-mode", session_id=created.session_id)
        after = await api.sessions_get(api_key="any-key-in-open-mode")
        return created, listed, after

    created, listed, after = run(server, scenario)
    assert created.code_snippet_id == "snip2"
    assert created.edit_enabled is False
    uuid.UUID(created.session_id)
    assert created.client_id
    assert [item.session_id for item in listed if item.session_id == created.session_id] == [created.session_id]
    assert all(item.session_id != created.session_id for item in after)
    # The session was a real corral session, closed everywhere.
    native = requests.get(server.url(f"/v1/sessions/{created.session_id}"), timeout=30).json()
    assert native["state"] == "closed"


def test_the_client_sees_errors_as_api_exceptions(server):
    async def scenario(api):
        with pytest.raises(ApiException) as refreshed:
            await api.sessions_session_id_refresh_post(str(uuid.uuid4()))
        with pytest.raises(ApiException) as deleted:
            await api.sessions_session_id_delete(api_key="k", session_id="not-a-session")
        return refreshed.value.status, deleted.value.status

    assert run(server, scenario) == (404, 404)


def test_edit_sessions_keep_their_fields(server):
    async def scenario(api):
        created = await api.sessions_post(NewSession(codeSnippetID="shared", editEnabled=True))
        listed = await api.sessions_get(api_key="k")
        await api.sessions_session_id_delete(api_key="k", session_id=created.session_id)
        return created, listed

    created, listed = run(server, scenario)
    assert created.edit_enabled is True
    match = [item for item in listed if item.session_id == created.session_id]
    assert match[0].code_snippet_id == "shared" and match[0].edit_enabled is True
