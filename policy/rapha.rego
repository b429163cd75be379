# Rapha's default job policy: the two gates every job passes.
#
#   data.rapha.admission  step 2, before the PACS is queried
#   data.rapha.final      step 7, before the trainer runs
#
# Each gate is {"allow": bool, "reasons": [string]}. A job is allowed only when no rule below
# produces a reason. Every check is written as "deny unless a positive condition holds", so a
# missing or malformed input field denies instead of slipping through.
#
# `input` is built by rapha-node from the job request, the bundle's declared outputs and
# resources, the publisher's earlier admitted jobs (`publisher_history`: admission times;
# `publisher_jobs`: time, outcome, cohort size, query digest of each), the cohort, the DPO
# approval and the attestation verdicts; `data.hospital` from the node's configuration (see
# docs/configuration.md, sections [policy] and [trainer.limits]).
#
# Written in Rego v1 syntax accepted by regorus (in the node) and rego-cpp / OPA (so the
# policy stays portable). Messages are read by the hospital's Data Protection Officer: they
# say what was refused and why, in plain words.
package rapha

import rego.v1

default_min_patients := 50

default_min_validation_patients := 20

min_patients := object.get(data.hospital, "min_patients", default_min_patients)

min_validation_patients := object.get(data.hospital, "min_validation_patients", default_min_validation_patients)

# ---------------------------------------------------------------------------------------------
# Admission gate
# ---------------------------------------------------------------------------------------------

admission := {
	"allow": count(admission_reasons) == 0,
	"reasons": sort([r | some r in admission_reasons]),
}

admission_input_complete if {
	is_string(input.publisher)
	is_string(input.trainer)
	is_object(input.query)
	is_array(input.query.study_uids)
	is_array(input.query.accession_numbers)
	is_array(input.query.modalities)
	is_array(input.requested_fields)
	is_array(input.outputs)
	is_number(input.fee)
	is_string(input.fee_usdc)
	is_number(input.now)
	is_array(input.publisher_history)
	every t in input.publisher_history {
		is_number(t)
	}
	is_array(input.publisher_jobs)
	is_object(input.resources)
	every k in resource_keys {
		is_number(input.resources[k])
	}
	linkage_well_formed
	every output in input.outputs {
		is_string(output.name)
		is_string(output.kind)
		is_number(output.max_bytes)
	}
	every s in array.concat(input.requested_fields, input.query.modalities) {
		is_string(s)
	}
}

# A request names a linkage group (a string) or none (null).
linkage_well_formed if input.linkage == null

linkage_well_formed if is_string(input.linkage)

admission_reasons contains msg if {
	not admission_input_complete
	msg := "The job request is incomplete or malformed, so it cannot be assessed; it is refused."
}

# Publisher and trainer trusted.

publisher_trusted if is_object(data.hospital.publishers[input.publisher])

admission_reasons contains msg if {
	not publisher_trusted
	msg := sprintf("The publisher '%s' is not on this hospital's list of trusted publishers.", [input.publisher])
}

trainer_trusted if input.trainer in data.hospital.publishers[input.publisher].trainers

# "*" in the trust store: the hospital accepts any trainer this publisher signs.
trainer_trusted if "*" in data.hospital.publishers[input.publisher].trainers

admission_reasons contains msg if {
	publisher_trusted
	not trainer_trusted
	msg := sprintf("The trainer '%s' is not one this hospital has approved for the publisher '%s'.", [input.trainer, input.publisher])
}

# Requested scope within the hospital's limits.

query_has_limit if {
	is_number(input.query.limit)
	input.query.limit > 0
}

admission_reasons contains msg if {
	not query_has_limit
	msg := sprintf("The query sets no upper bound on the number of studies; this hospital requires one (at most %v).", [data.hospital.scope.max_studies])
}

admission_reasons contains msg if {
	query_has_limit
	input.query.limit > data.hospital.scope.max_studies
	msg := sprintf("The query asks for up to %v studies; this hospital allows at most %v per job.", [input.query.limit, data.hospital.scope.max_studies])
}

explicit_study_count := n if {
	is_array(input.query.study_uids)
	is_array(input.query.accession_numbers)
	n := count(input.query.study_uids) + count(input.query.accession_numbers)
}

admission_reasons contains msg if {
	explicit_study_count > data.hospital.scope.max_studies
	msg := sprintf("The query lists %v studies by identifier; this hospital allows at most %v per job.", [explicit_study_count, data.hospital.scope.max_studies])
}

query_has_date_range if is_number(input.query.date_range_days)

query_narrowed if explicit_study_count > 0

query_narrowed if query_has_date_range

admission_reasons contains msg if {
	not query_narrowed
	msg := "The query is not narrowed to named studies or a study date range; the whole archive cannot be requested."
}

admission_reasons contains msg if {
	query_has_date_range
	input.query.date_range_days > data.hospital.scope.max_date_range_days
	msg := sprintf("The query covers %v days of studies; this hospital allows a date range of at most %v days.", [input.query.date_range_days, data.hospital.scope.max_date_range_days])
}

admission_reasons contains msg if {
	some modality in input.query.modalities
	not modality in data.hospital.scope.modalities
	msg := sprintf("The modality '%s' is not one this hospital makes available for training.", [modality])
}

# Only allowed output types and sizes.

admission_reasons contains msg if {
	is_array(input.outputs)
	count(input.outputs) == 0
	msg := "The trainer declares no outputs; a job must declare every file it will return."
}

admission_reasons contains msg if {
	some output in input.outputs
	not output.kind in data.hospital.outputs.kinds
	msg := sprintf("The output '%s' is of type '%s', which this hospital does not release.", [output.name, output.kind])
}

admission_reasons contains msg if {
	some output in input.outputs
	is_number(output.max_bytes)
	output.max_bytes > data.hospital.outputs.max_file_bytes
	msg := sprintf("The output '%s' may be up to %v bytes; this hospital releases files of at most %v bytes.", [output.name, output.max_bytes, data.hospital.outputs.max_file_bytes])
}

total_output_bytes := sum([output.max_bytes |
	some output in input.outputs
	is_number(output.max_bytes)
])

admission_reasons contains msg if {
	total_output_bytes > data.hospital.outputs.max_total_bytes
	msg := sprintf("The outputs together may be up to %v bytes; this hospital releases at most %v bytes per job.", [total_output_bytes, data.hospital.outputs.max_total_bytes])
}

# Opt-in metadata fields must all be allowed.

admission_reasons contains msg if {
	some field in input.requested_fields
	not field in data.hospital.allowed_metadata_fields
	msg := sprintf("The trainer asks for the metadata field '%s', which this hospital does not share.", [field])
}

# Fee at least the hospital's minimum.

fee_sufficient if {
	is_number(input.fee)
	input.fee >= data.hospital.min_fee
}

admission_reasons contains msg if {
	not fee_sufficient
	msg := sprintf("The fee offered (%s USDC) is below this hospital's minimum of %s USDC.", [input.fee_usdc, data.hospital.min_fee_usdc])
}

# Resources the trainer asks for, within the node's bounds ([trainer.limits]). The node refuses
# a request outside them before this gate runs; the rule keeps the policy complete on its own.

resource_keys := ["memory_mb", "cpus", "pids", "wall_seconds", "tmp_mb"]

resource_within(v, bound) if {
	v >= bound.min
	v <= bound.max
}

admission_reasons contains msg if {
	some k in resource_keys
	bound := data.hospital.resources[k]
	is_number(input.resources[k])
	not resource_within(input.resources[k], bound)
	msg := sprintf("The trainer asks for %s = %v; this hospital allows %v to %v.", [k, input.resources[k], bound.min, bound.max])
}

# GPUs: a trainer that declares none (no `gpus` key) gets none. One that declares some gets the
# node's GPUs ([trainer] gpus), whose memory is outside any enclave, only within
# data.hospital.resources.gpus; without that bound (a node with no GPU) none is admitted.

admission_reasons contains msg if {
	n := object.get(input.resources, "gpus", 0)
	bound := object.get(data.hospital.resources, "gpus", {"min": 0, "max": 0})
	not resource_within(n, bound)
	msg := sprintf("The trainer asks for %v GPU(s); this hospital allows %v to %v (a GPU's memory is outside any enclave).", [n, bound.min, bound.max])
}

# Pseudonyms are per job. A job may share them with other jobs of its publisher (a linkage
# group, e.g. the rounds of one federated run) only where the hospital allows it for that
# publisher; the DPO then sees the group in the request it approves.

linkage_allowed if input.publisher in object.get(data.hospital, "linkage_publishers", [])

admission_reasons contains msg if {
	is_string(input.linkage)
	not linkage_allowed
	msg := sprintf("The job asks for its pseudonyms to be linked with the other jobs of group '%s'; this hospital does not allow linkage for the publisher '%s'.", [input.linkage, input.publisher])
}

# Per-publisher job budget over a rolling window, so repeated jobs cannot turn validation
# metrics into an oracle on individual labels.

recent_jobs := count([t |
	some t in input.publisher_history
	is_number(t)
	t > input.now - (data.hospital.budget.window_hours * 3600)
])

budget_left if recent_jobs < data.hospital.budget.max_jobs

admission_reasons contains msg if {
	not budget_left
	msg := sprintf("The publisher '%s' has already run %v jobs here in the last %v hours, the most this hospital allows in that time.", [input.publisher, recent_jobs, data.hospital.budget.window_hours])
}

# ---------------------------------------------------------------------------------------------
# Final gate
# ---------------------------------------------------------------------------------------------

final := {
	"allow": count(final_reasons) == 0,
	"reasons": sort([r | some r in final_reasons]),
}

final_input_complete if {
	is_string(input.job_digest)
	is_number(input.now)
	is_object(input.attestation)
	is_boolean(input.attestation.present)
	is_boolean(input.attestation.verified)
	is_object(input.cohort)
	is_number(input.cohort.patients)
	is_number(input.cohort.validation_patients)
}

final_reasons contains msg if {
	not final_input_complete
	msg := "The final check received incomplete or malformed information about the job, so the trainer may not run."
}

# A valid, unexpired, unrevoked DPO approval for this exact job digest.

approval_present if is_object(input.approval)

final_reasons contains msg if {
	not approval_present
	msg := "No Data Protection Officer approval has been recorded for this job."
}

approval_signature_valid if input.approval.signature_valid == true

final_reasons contains msg if {
	approval_present
	not approval_signature_valid
	msg := "The approval's signature does not verify; it may have been altered."
}

approval_signer_trusted if input.approval.signer_trusted == true

final_reasons contains msg if {
	approval_present
	not approval_signer_trusted
	msg := "The approval was signed with a key that is not one of this hospital's Data Protection Officer keys."
}

approval_for_this_job if input.approval.job_digest == input.job_digest

final_reasons contains msg if {
	approval_present
	not approval_for_this_job
	msg := "The approval is for a different job or cohort; the job or its cohort changed after approval, so it needs a new approval."
}

approval_unexpired if {
	is_number(input.now)
	is_number(input.approval.expires_at)
	input.now < input.approval.expires_at
}

final_reasons contains msg if {
	approval_present
	not approval_unexpired
	msg := "The approval has expired; the Data Protection Officer must approve the job again."
}

approval_unrevoked if input.approval.revoked == false

final_reasons contains msg if {
	approval_present
	not approval_unrevoked
	msg := "The Data Protection Officer revoked the approval for this job."
}

# Attestation evidence present and verified (production mode).

production if data.hospital.mode == "production"

final_reasons contains msg if {
	production
	input.attestation.present != true
	msg := "No hardware attestation evidence was produced for this job; in production the trainer runs only on an attested appliance."
}

final_reasons contains msg if {
	production
	input.attestation.present == true
	input.attestation.verified != true
	msg := "The hardware attestation evidence for this job did not verify; the appliance's state cannot be trusted."
}

# Cohort size and validation split.

final_reasons contains msg if {
	is_number(input.cohort.patients)
	input.cohort.patients < min_patients
	msg := sprintf("The cohort has %v patients; this hospital requires at least %v so that no individual stands out.", [input.cohort.patients, min_patients])
}

final_reasons contains msg if {
	is_number(input.cohort.validation_patients)
	input.cohort.validation_patients < min_validation_patients
	msg := sprintf("The validation split has %v patients; this hospital requires at least %v before it releases validation metrics, which tell the publisher a few bits of the validation labels per job.", [input.cohort.validation_patients, min_validation_patients])
}
