"""Stand-ins for built-in modules that are not installed yet, shaped by /work/shared/intents.md.

Only used by the planner bench and tests when an entry point cannot be imported (the
modules are written concurrently); the bench prints which ones were stubbed. The stubs
register intents with the contract's names, params, risks and entities; their handlers
refuse to run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from cloudisense.core.errors import ActionFailed
from cloudisense.core.intents import Intent, NoParams, Params, Risk
from cloudisense.core.modules import Module


async def _not_here(params: Any, ctx: Any) -> Any:
    raise ActionFailed("this is a planning stub; the real module is not installed")


class PlaybookParams(Params):
    """A playbook run."""

    name: str = Field(min_length=1, max_length=128, description="playbook file name, e.g. nginx.yml")
    extra_vars: dict[str, Any] = Field(default_factory=dict)
    check: bool = Field(False, description="dry run (check mode): report what would change")
    limit: str | None = Field(None, description="only these inventory hosts")


class ProvisionStub(Module):
    """``list_playbooks`` / ``run_playbook`` (contract shape)."""

    name = "provision"

    def intents(self) -> list[Intent]:
        return [
            Intent("list_playbooks", "The Ansible playbooks this node can run", _not_here, NoParams, Risk.READ,
                   ("which playbooks are there", "list playbooks", "what can you provision")),
            Intent("run_playbook", "Run an Ansible playbook against the inventory (check mode is a dry run)",
                   _not_here, PlaybookParams, Risk.DESTRUCTIVE,
                   ("run the nginx playbook", "apply users.yml", "dry-run the nginx playbook",
                    "provision the web servers"), entities={"name": "playbook"}),
        ]

    def entities(self) -> dict[str, list[str]]:
        folder = self.node.settings.provision.folder
        names = sorted(p.name for p in Path(folder).glob("*.y*ml")) if folder and Path(folder).is_dir() else []
        return {"playbook": [n for n in names if n != "inventory.yml"] or ["nginx.yml", "users.yml"]}


class ApprovalsStub(Module):
    """``list_approvals`` (contract shape)."""

    name = "agent"

    def intents(self) -> list[Intent]:
        return [Intent("list_approvals", "Approvals waiting for a decision", _not_here, NoParams, Risk.READ,
                       ("pending approvals", "what is waiting for my approval"))]


STUBS: dict[str, type[Module]] = {"provision": ProvisionStub, "agent": ApprovalsStub}
