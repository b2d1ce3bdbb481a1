# Unit tests for policy.rego (OPA convention: every rule test_* must be true).
package clawshield_test

import rego.v1

import data.clawshield

charge(amount, used) := {
	"action": "charge_card",
	"payload": {"amount": amount, "currency": "EUR", "to": "acct-1"},
	"tenant_id": "t1",
	"agent": {"id": "agent-1", "tenant_id": "t1"},
	"limits": {"budget": {"used": used, "left": 100000000 - used}},
}

test_small_payment_allowed if {
	d := clawshield.decision with input as charge(9999, 0)
	d.effect == "allow"
	d.cost == 9999
	d.rules == ["charge_card.small"]
}

test_10000_needs_two_finance if {
	d := clawshield.decision with input as charge(10000, 0)
	d.effect == "require_approval"
	d.approval.min == 2
	d.approval.groups == ["finance"]
	d.approval.deny_threshold == 1
	d.cost == 10000
}

test_budget_exceeded_denied if {
	d := clawshield.decision with input as charge(100, 99999950)
	d.effect == "deny"
	d.rules == ["charge_card.daily_budget"]
}

test_budget_exactly_reached_allowed if {
	d := clawshield.decision with input as charge(50, 99999950)
	d.effect == "allow"
}

test_large_payment_past_budget_denied if {
	d := clawshield.decision with input as charge(200000000, 0)
	d.effect == "deny"
}

test_invalid_amount_denied if {
	d := clawshield.decision with input as charge("12", 0)
	d.effect == "deny"
	d.rules == ["charge_card.invalid_amount"]
}

test_negative_amount_denied if {
	d := clawshield.decision with input as charge(-5, 0)
	d.effect == "deny"
}

test_prod_delete_needs_two_ops if {
	d := clawshield.decision with input as {"action": "delete_resource", "payload": {"env": "prod", "id": "db-1"}}
	d.effect == "require_approval"
	d.approval.min == 2
	d.approval.groups == ["ops"]
	d.approval.deny_threshold == 1
}

test_prod_delete_never_allowed if {
	d := clawshield.decision with input as {"action": "delete_resource", "payload": {"env": "prod", "id": "db-1"}, "limits": {"budget": {"used": 0}}}
	d.effect != "allow"
}

test_non_prod_delete_denied if {
	d := clawshield.decision with input as {"action": "delete_resource", "payload": {"env": "staging", "id": "db-1"}}
	d.effect == "deny"
	d.rules == ["delete_resource.other_env"]
}

test_activation_needs_two_finance_or_ops if {
	d := clawshield.decision with input as {"action": "clawshield.policy.activate", "payload": {"policy_hash": "ab"}}
	d.effect == "require_approval"
	d.approval.min == 2
	d.approval.groups == ["finance", "ops"]
	d.approval.deny_threshold == 1
}

test_unknown_action_denied if {
	d := clawshield.decision with input as {"action": "launch_rocket", "payload": {}}
	d.effect == "deny"
	d.rules == ["default_deny"]
}
