"""Extra links from a task to Baseten's dashboard.

Airflow's UI reads every extra link from XCom (key ``_link_<ClassName>``). The task runner writes that key when an
attempt ends, from :meth:`get_link` on the rendered operator; an operator that calls :meth:`persist` at the start of
``execute`` makes the link visible while the task is still running (or deferred).

- :class:`BasetenModelLink` and :class:`BasetenChainLink` are built from the operator's ``model_id`` / ``chain_id``.
- :class:`BasetenAsyncRequestLink` appears once the task has pushed the XCom ``request_id`` (an async request was
  submitted); Baseten's dashboard has no page per request, so it opens the model's (or chain's) page, whose logs
  carry the request id. Async operators call ``BasetenAsyncRequestLink.persist(context, self, request_id)``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, Context, TaskInstanceKey

DASHBOARD_URL = "https://app.baseten.co"
#: XCom key under which an async operator records the id of the request it submitted.
REQUEST_ID_XCOM_KEY = "request_id"

_ID = re.compile(r"[A-Za-z0-9]+")


def model_page_url(model_id: object) -> str:
    """``https://app.baseten.co/models/{model_id}/overview``, or ``""`` when the id is missing or invalid."""
    return _page_url("models", model_id)


def chain_page_url(chain_id: object) -> str:
    """``https://app.baseten.co/chains/{chain_id}/overview``, or ``""`` when the id is missing or invalid."""
    return _page_url("chains", chain_id)


def _page_url(collection: str, target_id: object) -> str:
    # An unrendered template ("{{ params.model }}") or a typo gives no link rather than a broken one.
    if not isinstance(target_id, str) or not _ID.fullmatch(target_id):
        return ""
    return f"{DASHBOARD_URL}/{collection}/{target_id}/overview"


def target_page_url(operator: Any) -> str:
    """The dashboard page of whatever the operator addresses: its model, else its chain."""
    return model_page_url(getattr(operator, "model_id", None)) or chain_page_url(getattr(operator, "chain_id", None))


def _push(context: Context, key: str, value: Any) -> None:
    context["ti"].xcom_push(key=key, value=value)


class _PersistableLink(BaseOperatorLink):
    """A link whose URL the operator can publish early, while the task runs."""

    def url_for(self, operator: Any) -> str:
        raise NotImplementedError

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return self.url_for(operator)

    @classmethod
    def persist(cls, context: Context, operator: Any) -> str:
        """Publish the link now (XCom under :attr:`xcom_key`) so the UI shows it during the run; returns it."""
        link = cls()
        url = link.url_for(operator)
        if url:
            _push(context, link.xcom_key, url)
        return url


class BasetenModelLink(_PersistableLink):
    """The model's page in Baseten's dashboard, from the operator's (rendered) ``model_id``."""

    name = "Baseten model"

    def url_for(self, operator: Any) -> str:
        return model_page_url(getattr(operator, "model_id", None))


class BasetenChainLink(_PersistableLink):
    """The chain's page in Baseten's dashboard, from the operator's (rendered) ``chain_id``."""

    name = "Baseten chain"

    def url_for(self, operator: Any) -> str:
        return chain_page_url(getattr(operator, "chain_id", None))


class BasetenAsyncRequestLink(BaseOperatorLink):
    """The page of the model (or chain) that runs the task's async request; empty until a request was submitted.

    The task records the request under the XCom key ``request_id``; call :meth:`persist` right after the submit.
    """

    name = "Baseten async request"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        # The task runner calls this on the operator that just ran, whose ``request_id`` is set once a request was
        # submitted (or re-attached, or resumed from the trigger's event). Reading the XCom instead would log
        # Airflow's error-level "XCom not found" on every task that never submitted (a refused submit).
        request_id = getattr(operator, "request_id", None)
        return target_page_url(operator) if request_id else ""

    @classmethod
    def persist(cls, context: Context, operator: Any, request_id: str) -> str:
        """Push ``request_id`` (XCom key ``request_id``) and the link itself, so the UI shows it while deferred."""
        _push(context, REQUEST_ID_XCOM_KEY, request_id)
        url = target_page_url(operator)
        if url:
            _push(context, cls().xcom_key, url)
        return url
