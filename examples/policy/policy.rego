# ClawShield's example policy (SPEC §9).
#
# The gate evaluates data.clawshield.decision with this input:
#   input.action          the declared action, e.g. "charge_card"
#   input.payload         its payload (an object): charge_card {"amount": integer minor units,
#                         "currency", "to"}; delete_resource {"env", "id"}
#   input.tenant_id       the agent's tenant
#   input.agent           {"id", "tenant_id", "on_behalf_of"}
#   input.intent_hash, input.request_hash, input.nonce, input.context (the agent's own JSON)
#   input.limits          the breakers' state: {"rate": {...}, "loop": {...},
#                         "budget": {"used": minor units spent today by the tenant, "left": ...}}
#
# It answers {"effect", "reasons", "rules", "approval"?, "cost"} (see openexec-policy's docs).
#
#   charge_card below 10000            allow (cost = amount)
#   charge_card from 10000             two approvals of finance
#   charge_card past the daily budget  deny (100000000 per tenant per day, counting this charge)
#   delete_resource in prod            two approvals of ops, never automatic
#   delete_resource elsewhere          deny (not governed by this policy)
#   clawshield.policy.activate         two approvals of finance or ops
#   any other action                   deny
# Deny threshold 1 everywhere: one denial denies.
package clawshield

import rego.v1

small_payment_limit := 10000

daily_budget := 100000000

default budget_used := 0

budget_used := input.limits.budget.used if is_number(input.limits.budget.used)

amount := input.payload.amount if {
	is_number(input.payload.amount)
	input.payload.amount > 0
	input.payload.amount == floor(input.payload.amount)
}

default decision := {
	"effect": "deny",
	"reasons": ["action not allowed by policy"],
	"rules": ["default_deny"],
}

decision := d if {
	input.action == "charge_card"
	not amount
	d := {
		"effect": "deny",
		"reasons": ["charge_card needs a positive integer payload.amount"],
		"rules": ["charge_card.invalid_amount"],
	}
} else := d if {
	input.action == "charge_card"
	budget_used + amount > daily_budget
	d := {
		"effect": "deny",
		"reasons": [sprintf("daily tenant budget of %d exceeded", [daily_budget])],
		"rules": ["charge_card.daily_budget"],
		"cost": amount,
	}
} else := d if {
	input.action == "charge_card"
	amount < small_payment_limit
	d := {
		"effect": "allow",
		"reasons": [sprintf("payment below %d", [small_payment_limit])],
		"rules": ["charge_card.small"],
		"cost": amount,
	}
} else := d if {
	input.action == "charge_card"
	d := {
		"effect": "require_approval",
		"reasons": [sprintf("payment of %d or more needs two finance approvals", [small_payment_limit])],
		"rules": ["charge_card.large"],
		"approval": {"min": 2, "groups": ["finance"], "deny_threshold": 1, "ttl_seconds": 3600, "reason_required": false},
		"cost": amount,
	}
} else := d if {
	input.action == "delete_resource"
	input.payload.env == "prod"
	d := {
		"effect": "require_approval",
		"reasons": ["production deletion needs two ops approvals"],
		"rules": ["delete_resource.prod"],
		"approval": {"min": 2, "groups": ["ops"], "deny_threshold": 1, "ttl_seconds": 3600, "reason_required": true},
	}
} else := d if {
	input.action == "delete_resource"
	d := {
		"effect": "deny",
		"reasons": ["delete_resource is only governed in env prod"],
		"rules": ["delete_resource.other_env"],
	}
} else := d if {
	input.action == "clawshield.policy.activate"
	d := {
		"effect": "require_approval",
		"reasons": ["activating a policy needs two approvals of finance or ops"],
		"rules": ["policy.activate"],
		"approval": {"min": 2, "groups": ["finance", "ops"], "deny_threshold": 1, "ttl_seconds": 86400, "reason_required": true},
	}
}
