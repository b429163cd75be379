# Unit tests of policy/rapha.rego, run by `rapha-node policy test` (and by `opa test policy/`).
# Each test_* rule must evaluate to true.
package rapha_test

import rego.v1

import data.rapha

hospital := {
	"mode": "production",
	"publishers": {"acme-ai": {"trainers": ["chest-xray-classifier"]}},
	"scope": {"max_studies": 500, "max_date_range_days": 366, "modalities": ["CR", "DX", "CT"]},
	"outputs": {"kinds": ["safetensors", "metrics-json"], "max_file_bytes": 104857600, "max_total_bytes": 209715200},
	"allowed_metadata_fields": ["PatientAge", "PatientSex"],
	"min_fee": 100000000,
	"min_fee_usdc": "100.000000",
	"budget": {"max_jobs": 3, "window_hours": 720},
	"min_patients": 50,
	"min_validation_patients": 20,
	"resources": {
		"memory_mb": {"min": 64, "max": 16384},
		"cpus": {"min": 1, "max": 8},
		"pids": {"min": 8, "max": 1024},
		"wall_seconds": {"min": 10, "max": 86400},
		"tmp_mb": {"min": 1, "max": 1024},
	},
	"linkage_publishers": ["acme-ai"],
}

now := 1800000000

good_admission := {
	"publisher": "acme-ai",
	"trainer": "chest-xray-classifier",
	"query": {"study_uids": [], "accession_numbers": [], "date_range_days": 365, "modalities": ["CR"], "limit": 400},
	"requested_fields": ["PatientAge"],
	"outputs": [
		{"name": "model.safetensors", "kind": "safetensors", "max_bytes": 50000000},
		{"name": "metrics.json", "kind": "metrics-json", "max_bytes": 65536},
	],
	"resources": {"memory_mb": 2048, "cpus": 2, "pids": 64, "wall_seconds": 1800, "tmp_mb": 64},
	"linkage": null,
	"fee": 120000000,
	"fee_usdc": "120.000000",
	"now": now,
	"publisher_history": [now - 3000000, now - 10],
	"publisher_jobs": [
		{"admitted_at": now - 3000000, "outcome": "completed", "patients": 120, "query_digest": "aa"},
		{"admitted_at": now - 10, "outcome": null, "patients": null, "query_digest": "bb"},
	],
}

job_digest := "aa00000000000000000000000000000000000000000000000000000000000000"

good_final := {
	"job_digest": job_digest,
	"now": now,
	"approval": {
		"job_digest": job_digest,
		"signature_valid": true,
		"signer_trusted": true,
		"expires_at": now + 3600,
		"revoked": false,
	},
	"attestation": {"present": true, "verified": true},
	"cohort": {"patients": 120, "validation_patients": 24},
}

admission_with(patch) := d if {
	d := rapha.admission with input as object.union(good_admission, patch)
		with data.hospital as hospital
}

final_with(patch) := d if {
	d := rapha.final with input as object.union(good_final, patch)
		with data.hospital as hospital
}

test_good_job_is_admitted if {
	d := admission_with({})
	d.allow == true
	d.reasons == []
}

test_unknown_publisher_is_refused if {
	d := admission_with({"publisher": "mallory"})
	d.allow == false
	d.reasons == ["The publisher 'mallory' is not on this hospital's list of trusted publishers."]
}

test_unapproved_trainer_is_refused if {
	d := admission_with({"trainer": "face-recogniser"})
	d.allow == false
	d.reasons == ["The trainer 'face-recogniser' is not one this hospital has approved for the publisher 'acme-ai'."]
}

test_query_without_limit_is_refused if {
	d := admission_with({"query": {"limit": null}})
	d.allow == false
	d.reasons == ["The query sets no upper bound on the number of studies; this hospital requires one (at most 500)."]
}

test_unnarrowed_query_is_refused if {
	d := admission_with({"query": {"date_range_days": null}})
	d.reasons == ["The query is not narrowed to named studies or a study date range; the whole archive cannot be requested."]
}

test_too_long_date_range_is_refused if {
	d := admission_with({"query": object.union(good_admission.query, {"date_range_days": 3650})})
	d.reasons == ["The query covers 3650 days of studies; this hospital allows a date range of at most 366 days."]
}

test_unavailable_modality_is_refused if {
	d := admission_with({"query": object.union(good_admission.query, {"modalities": ["CR", "US"]})})
	d.reasons == ["The modality 'US' is not one this hospital makes available for training."]
}

test_disallowed_output_kind_is_refused if {
	d := admission_with({"outputs": [{"name": "model.onnx", "kind": "onnx", "max_bytes": 1000}]})
	d.reasons == ["The output 'model.onnx' is of type 'onnx', which this hospital does not release."]
}

test_opt_in_field_not_allowed_is_refused if {
	d := admission_with({"requested_fields": ["PatientAge", "InstitutionName"]})
	d.reasons == ["The trainer asks for the metadata field 'InstitutionName', which this hospital does not share."]
}

test_fee_below_minimum_is_refused if {
	d := admission_with({"fee": 99999999, "fee_usdc": "99.999999"})
	d.reasons == ["The fee offered (99.999999 USDC) is below this hospital's minimum of 100.000000 USDC."]
}

test_exhausted_budget_is_refused if {
	d := admission_with({"publisher_history": [now - 10, now - 20, now - 30]})
	d.reasons == ["The publisher 'acme-ai' has already run 3 jobs here in the last 720 hours, the most this hospital allows in that time."]
}

test_old_jobs_fall_out_of_the_budget_window if {
	d := admission_with({"publisher_history": [now - 10, now - 20, now - 2592000]})
	d.allow == true
}

test_resources_outside_the_bounds_are_refused if {
	d := admission_with({"resources": object.union(good_admission.resources, {"memory_mb": 0, "wall_seconds": 31536000})})
	d.reasons == [
		"The trainer asks for memory_mb = 0; this hospital allows 64 to 16384.",
		"The trainer asks for wall_seconds = 31536000; this hospital allows 10 to 86400.",
	]
}

test_a_gpu_is_refused_where_the_hospital_admits_none if {
	d := admission_with({"resources": object.union(good_admission.resources, {"gpus": 1})})
	d.reasons == ["The trainer asks for 1 GPU(s); this hospital allows 0 to 0 (a GPU's memory is outside any enclave)."]
}

test_a_gpu_within_the_hospitals_bound_is_admitted if {
	gpu_hospital := object.union(hospital, {"resources": object.union(hospital.resources, {"gpus": {"min": 0, "max": 1}})})
	i := object.union(good_admission, {"resources": object.union(good_admission.resources, {"gpus": 1})})
	d := rapha.admission with input as i with data.hospital as gpu_hospital
	d.allow == true
}

test_missing_resources_are_malformed if {
	partial := object.union(object.remove(good_admission, ["resources"]), {"resources": {"memory_mb": 2048}})
	d := rapha.admission with input as partial with data.hospital as hospital
	d.reasons == ["The job request is incomplete or malformed, so it cannot be assessed; it is refused."]
}

test_linkage_for_an_allowed_publisher_is_admitted if {
	d := admission_with({"linkage": "fed-run-1"})
	d.allow == true
}

test_linkage_for_another_publisher_is_refused if {
	d := rapha.admission with input as object.union(good_admission, {"linkage": "fed-run-1"})
		with data.hospital as object.union(hospital, {"linkage_publishers": []})
	d.reasons == ["The job asks for its pseudonyms to be linked with the other jobs of group 'fed-run-1'; this hospital does not allow linkage for the publisher 'acme-ai'."]
}

test_linkage_that_is_not_a_string_is_malformed if {
	d := admission_with({"linkage": 7})
	d.reasons == ["The job request is incomplete or malformed, so it cannot be assessed; it is refused."]
}

test_every_reason_is_reported if {
	d := admission_with({"publisher": "mallory", "fee": 1, "fee_usdc": "0.000001", "outputs": []})
	count(d.reasons) == 3
}

test_malformed_admission_input_is_refused if {
	d := rapha.admission with input as {"publisher": "acme-ai"} with data.hospital as hospital
	d.allow == false
}

test_approved_attested_job_passes_final if {
	d := final_with({})
	d.allow == true
	d.reasons == []
}

test_missing_approval_is_refused if {
	d := final_with({"approval": null})
	d.reasons == ["No Data Protection Officer approval has been recorded for this job."]
}

test_approval_for_other_job_is_refused if {
	d := final_with({"approval": object.union(good_final.approval, {"job_digest": "bb"})})
	d.reasons == ["The approval is for a different job or cohort; the job or its cohort changed after approval, so it needs a new approval."]
}

test_expired_approval_is_refused if {
	d := final_with({"approval": object.union(good_final.approval, {"expires_at": now})})
	d.reasons == ["The approval has expired; the Data Protection Officer must approve the job again."]
}

test_revoked_approval_is_refused if {
	d := final_with({"approval": object.union(good_final.approval, {"revoked": true})})
	d.reasons == ["The Data Protection Officer revoked the approval for this job."]
}

test_forged_approval_is_refused if {
	d := final_with({"approval": object.union(good_final.approval, {"signature_valid": false, "signer_trusted": false})})
	count(d.reasons) == 2
	d.allow == false
}

test_unattested_job_is_refused_in_production if {
	d := final_with({"attestation": {"present": false, "verified": false}})
	d.reasons == ["No hardware attestation evidence was produced for this job; in production the trainer runs only on an attested appliance."]
}

test_unverified_attestation_is_refused if {
	d := final_with({"attestation": {"present": true, "verified": false}})
	d.reasons == ["The hardware attestation evidence for this job did not verify; the appliance's state cannot be trusted."]
}

test_demo_mode_does_not_require_attestation if {
	d := rapha.final with input as object.union(good_final, {"attestation": {"present": false, "verified": false}})
		with data.hospital as object.union(hospital, {"mode": "demo"})
	d.allow == true
}

test_small_cohort_is_refused if {
	d := final_with({"cohort": {"patients": 49, "validation_patients": 20}})
	d.reasons == ["The cohort has 49 patients; this hospital requires at least 50 so that no individual stands out."]
}

test_small_validation_split_is_refused if {
	d := final_with({"cohort": {"patients": 60, "validation_patients": 19}})
	d.reasons == ["The validation split has 19 patients; this hospital requires at least 20 before it releases validation metrics, which tell the publisher a few bits of the validation labels per job."]
}

test_minimums_default_to_50_and_20 if {
	h := object.remove(hospital, ["min_patients", "min_validation_patients"])
	d := rapha.final with input as object.union(good_final, {"cohort": {"patients": 49, "validation_patients": 19}})
		with data.hospital as h
	count(d.reasons) == 2
}
