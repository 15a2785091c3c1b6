"""The registry's decisions: record runs, apply the promotion policy, promote, roll back.

No HTTP or Kafka types. Every decision is signed and stored with its lifecycle events in one
transaction (the registry's outbox, published by services/registry/outbox.py); methods also
return the events, for the caller's logs and tests.
"""

from __future__ import annotations

import logging

from contracts.events import LifecycleAction, ModelLifecycleChanged, ModelTrained
from contracts.http import ModelVersionView
from services.registry.store import Decided, Lookup, RegistryStore
from shared.errors import ModelNotFound, PromotionRefused, UndeclaredModel
from shared.project import PolicySpec, Project
from shared.promotion import compare
from shared.signing import Signer, Verifier

logger = logging.getLogger(__name__)


def judge(candidate: ModelTrained, champion: int | None,
          policy: PolicySpec) -> tuple[LifecycleAction, str]:
    """Promote or reject a candidate against the champion, on the same holdout only."""
    if champion is None:
        return LifecycleAction.PROMOTED, "first version of the model"
    if candidate.baseline_version != champion or not candidate.baseline_metrics:
        return LifecycleAction.REJECTED, (
            f"not scored against the current champion v{champion} (baseline: "
            f"v{candidate.baseline_version}); the comparison would not be on the same data")
    verdict = compare(policy, candidate.metrics, candidate.baseline_metrics,
                      f"champion v{champion}")
    return (LifecycleAction.PROMOTED if verdict.better else LifecycleAction.REJECTED,
            verdict.reason)


class Registry:
    """Versions, champions and the audit trail of every model in the project.

    Only runs that training signed are recorded (its public key checks them); every
    decision is signed with the registry's private key before it is announced.
    """

    def __init__(self, project: Project, store: RegistryStore, signer: Signer,
                 training: Verifier) -> None:
        self.project = project
        self.store = store
        self.signer = signer
        self.training = training

    def _event(self, view: ModelVersionView, action: LifecycleAction, reason: str,
               champion: int | None, actor: str, sequence: int | None) -> ModelLifecycleChanged:
        return self.signer.sign_decision(ModelLifecycleChanged(
            model=view.model, version=view.version, action=action, reason=reason,
            run_id=view.run_id, artifact=view.artifact, champion_version=champion,
            metrics=view.metrics, reference_profile=view.reference_profile, actor=actor,
            request_id=view.request_id, sequence=sequence))

    def record(self, event: ModelTrained) -> list[ModelLifecycleChanged]:
        """Register a trained candidate and decide on it; replays return the same decision.

        A run of an undeclared model, or one training did not sign (forged, tampered, signed
        with another key), raises an `InvalidInput` and changes nothing.
        """
        if event.model not in self.project.models:
            raise UndeclaredModel(model=event.model)
        self.training.verify_run(event)
        policy = self.project.model(event.model).policy
        existing = self.store.by_run(event.run_id)
        if existing is not None and existing.stage != "candidate":
            logger.info("run %s already registered as v%d; its decision went to the outbox "
                        "with it", event.run_id, existing.version)
            action = (LifecycleAction.REJECTED if existing.stage == "rejected"
                      else LifecycleAction.PROMOTED)
            return [self._event(existing, action, existing.decision or "",
                                self.store.champion_version(event.model), "policy",
                                existing.decision_sequence)]
        # A row still "candidate" was stored but never judged (a crash between the two
        # transactions): judge it now.
        version = existing.version if existing else self.store.add_version(event)
        champion = self.store.champion_version(event.model)
        action, reason = judge(event, champion, policy)
        promoted = action is LifecycleAction.PROMOTED
        events = self._decide(self.store.get(event.model, version), action, reason, "policy",
                              new_champion=version if promoted else None,
                              stage="champion" if promoted else "rejected")
        logger.info("%s v%d %s: %s", event.model, version, action.value, reason)
        return events

    def _decide(self, view: ModelVersionView, action: LifecycleAction, reason: str, actor: str,
                new_champion: int | None, stage: str) -> list[ModelLifecycleChanged]:
        """Store the decision with its signed events (one transaction: the outbox publishes
        them); each event carries its audit line id as the decision sequence."""
        events: list[ModelLifecycleChanged] = []

        def announce(decided: Decided, lookup: Lookup) -> list[ModelLifecycleChanged]:
            previous = decided.previous
            champion = previous if new_champion is None else new_champion
            events.append(self._event(lookup(view.version), action, reason, champion, actor,
                                      decided.sequence))
            if previous is not None and champion != previous:
                events.append(self._event(lookup(previous), LifecycleAction.ARCHIVED,
                                          f"replaced by v{champion}", champion, actor,
                                          decided.archived_sequence))
            return events

        self.store.decide(view.model, view.version, action.value, reason, actor,
                          new_champion=new_champion, stage=stage, announce=announce)
        return events

    def promote(self, model: str, version: int, reason: str,
                actor: str) -> list[ModelLifecycleChanged]:
        """Make a version champion by hand."""
        self._declared(model)
        view = self.store.get(model, version)
        if view.stage == "champion":
            raise PromotionRefused(model=model, version=version, detail="it is already champion")
        return self._decide(view, LifecycleAction.PROMOTED, reason, actor, new_champion=version,
                            stage="champion")

    def rollback(self, model: str, reason: str, actor: str) -> list[ModelLifecycleChanged]:
        """Restore the champion that the current one replaced when it was promoted; repeated
        rollbacks walk further back through the promotion history."""
        self._declared(model)
        current = self.store.champion_version(model)
        if current is None:
            raise PromotionRefused(model=model, version=0, detail="there is no champion")
        reigns = [e for e in self.store.audit_log(model)
                  if e.action in ("promoted", "rolled_back")]
        promoted_at = max((i for i, e in enumerate(reigns)
                           if e.version == current and e.action == "promoted"),
                          default=len(reigns))
        earlier = [e.version for e in reigns[:promoted_at] if e.version != current]
        if not earlier:
            raise PromotionRefused(model=model, version=current,
                                   detail="no earlier champion to roll back to")
        target = earlier[-1]
        return self._decide(self.store.get(model, target), LifecycleAction.ROLLED_BACK, reason,
                            actor, new_champion=target, stage="champion")

    def champion(self, model: str) -> ModelVersionView | None:
        self._declared(model)
        version = self.store.champion_version(model)
        return None if version is None else self.store.get(model, version)

    def _declared(self, model: str) -> None:
        if model not in self.project.models:
            raise ModelNotFound(model=model)
