"""Shared fixtures. Component tests must run in CI: a skip there fails the run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.components import IN_CI, leftovers, require, tiers
from tests.components.hsm import HsmFixture, RemoteHsm, make_hsm, remote_hsm
from tests.components.tsa import MODES, LocalTsa, TsaPki, make_tsa_pki

#: Fixture modules of the signing service's components: the OIDC issuer, PostgreSQL, the service.
pytest_plugins = ["tests.components.oidc", "tests.components.postgres", "tests.components.service"]

__all__ = ["require"]

#: Fixtures (anywhere in a test's fixture closure) that start a real component: a token, a
#: server, a daemon. Their tests are `component`.
COMPONENT_FIXTURES = frozenset(
    {
        "hsm",
        "remote",
        "tsas",
        "tsa",
        "moto",
        "kms",
        "bao",
        "vault",
        "world",
        "web_flow",
        "pgp",
        "oidc",
        "postgres",
        "pg_url",
        "service",
        "service_server",
    }
)
#: What a test's code (or its module's helpers) calls to start one itself: `component` too.
COMPONENT_CALLS = frozenset(
    {"gpg_user", "gpg", "gpgconf", "start_tsa", "LocalTsa", "openbao_server", "moto_server",
     "make_hsm", "remote_hsm", "SoftHsmToken", "run_act", "run_pipeline", "p11-kit",
     "OidcIssuer", "start_postgres", "start_service"}
)  # fmt: skip
#: The CI plugins run for real (act for the GitHub Action, gitlab-ci-local for GitLab).
PLUGIN_CALLS = frozenset({"run_act", "run_pipeline"})
#: Tests measured over ~2 s (`--durations=0`, one file at a time on the 2-core runner), and
#: those over 0.75 s in a run of the quick tier itself, as
#: node ids without parameters (fnmatch); `pytest -m "not slow"` is the quick tier.
SLOW: frozenset[str] = frozenset(
    {
        "tests/adversarial/test_git_attacks.py::test_a_merge_needs_the_rule_roles_for_paths_changed_against_any_parent",
        "tests/adversarial/test_git_attacks.py::test_a_policy_that_is_not_a_regular_file_is_refused_at_once",
        "tests/adversarial/test_git_attacks.py::test_an_honest_merge_of_two_honest_branches_passes",
        "tests/adversarial/test_git_attacks.py::test_commit_objects_git_would_read_differently_are_malformed",
        "tests/adversarial/test_git_attacks.py::test_repository_config_cannot_run_programs_through_sealgate",
        "tests/adversarial/test_hostile_input.py::test_a_fifo_or_device_as_a_data_file_is_refused_at_once",
        "tests/adversarial/test_hostile_input.py::test_a_signed_but_hostile_statement_is_exit_2_naming_the_field",
        "tests/adversarial/test_hostile_input.py::test_hostile_envelope_json_is_exit_2_naming_the_file",
        "tests/adversarial/test_hostile_input.py::test_sign_json_with_a_credential_tsa_url_shows_it_nowhere",
        "tests/adversarial/test_hostile_input.py::test_the_vault_token_is_never_shown_when_the_server_refuses_it",
        "tests/adversarial/test_hostile_input.py::test_timestamp_json_with_a_credential_tsa_url_shows_it_nowhere",
        "tests/adversarial/test_signature_attacks.py::test_ssh_key_type_confusion",
        "tests/adversarial/test_workspace_attacks.py::test_a_declared_glob_that_does_not_compile_is_bad_glob",
        "tests/fuzz/test_fuzz_cms.py::test_cms_parser_refusals_carry_a_specific_code",
        "tests/fuzz/test_fuzz_envelopes.py::test_dsse_refusals_carry_an_envelope_code",
        "tests/integrity/test_integrity_paths.py::test_a_huge_commit_argument_is_a_usage_error_not_an_os_error",
        "tests/integrity/test_integrity_paths.py::test_an_unusable_repository_path_is_exit_2_with_the_os_reason",
        "tests/integrity/test_integrity_paths.py::test_the_honest_repository_passes_every_command",
        "tests/integrity/test_sshsig.py::test_valid_signatures_verify_like_ssh_keygen",
        "tests/sealgate/test_demo.py::test_workdir_the_os_refuses_is_a_path_error",
        "tests/sealgate/test_exit_codes.py::test_exit_0_done_and_verified",
        "tests/sealgate/test_exit_codes.py::test_exit_130_interrupted_and_nothing_written",
        "tests/sealgate/test_exit_codes.py::test_exit_1_the_gate_blocks",
        "tests/sealgate/test_exit_codes.py::test_exit_2_for_a_fifo_and_a_missing_out_dir_parent",
        "tests/sealgate/test_exit_codes.py::test_exit_2_names_the_input_and_its_reason",
        "tests/sealgate/test_exit_codes.py::test_exit_3_no_tsa_answers",
        "tests/sealgate/test_pipeline_verify_options.py::test_a_bad_verify_option_is_exit_2_before_anything_is_signed",
        "tests/sealgate/test_pipeline_verify_options.py::test_a_crl_revoking_the_signer_fails_the_verify_stage",
        "tests/sealgate/test_pipeline_verify_options.py::test_at_reaches_the_verify_stage",
        "tests/sealgate/test_pipeline_verify_options.py::test_control_the_run_passes_with_the_signers_identity",
        "tests/sealgate/test_pipeline_verify_options.py::test_sealgate_yml_cannot_choose_how_leniently_the_gate_judges",
        "tests/sealgate/test_run.py::test_a_failed_or_tampering_build_fails_the_watch_stage_with_its_code",
        "tests/signer/test_awskms.py::test_scheme_checks",
        "tests/signer/test_verify_gate.py::test_revocation_is_judged_at_the_token",
        "tests/test_tiers.py::test_component_detection_follows_the_modules_helpers",
        "tests/adversarial/test_certificate_attacks.py::test_a_ca_certificate_cannot_be_the_signer",
        "tests/adversarial/test_certificate_attacks.py::test_a_ca_signed_leaf_without_eku_nesting_in_a_t*",
        "tests/adversarial/test_certificate_attacks.py::test_a_chain_longer_than_the_limit_is_refused_wi*",
        "tests/adversarial/test_certificate_attacks.py::test_a_fifo_artifact_is_refused_at_once",
        "tests/adversarial/test_certificate_attacks.py::test_a_fifo_certificate_given_to_sign_is_refused",
        "tests/adversarial/test_certificate_attacks.py::test_a_fifo_signature_given_to_timestamp_is_refu*",
        "tests/adversarial/test_certificate_attacks.py::test_a_foreign_root_is_named",
        "tests/adversarial/test_certificate_attacks.py::test_a_gen_time_without_z_is_malformed_not_a_typ*",
        "tests/adversarial/test_certificate_attacks.py::test_a_key_usage_without_digital_signature_canno*",
        "tests/adversarial/test_certificate_attacks.py::test_a_malformed_tsa_url_with_credentials_is_ref*",
        "tests/adversarial/test_certificate_attacks.py::test_a_missing_intermediate_names_the_issuer_tha*",
        "tests/adversarial/test_certificate_attacks.py::test_a_name_constrained_intermediate_cannot_vouc*",
        "tests/adversarial/test_certificate_attacks.py::test_a_nested_intermediate_excluding_code_signin*",
        "tests/adversarial/test_certificate_attacks.py::test_a_path_length_zero_ca_cannot_have_a_sub_ca_*",
        "tests/adversarial/test_certificate_attacks.py::test_a_pem_signature_is_refused_with_the_convers*",
        "tests/adversarial/test_certificate_attacks.py::test_a_root_embedded_in_the_signature_is_not_tru*",
        "tests/adversarial/test_certificate_attacks.py::test_a_san_holding_the_text_of_another_kind_does*",
        "tests/adversarial/test_certificate_attacks.py::test_a_signing_time_without_z_is_malformed_not_a*",
        "tests/adversarial/test_certificate_attacks.py::test_a_special_file_as_gate_input_is_refused_at_*",
        "tests/adversarial/test_certificate_attacks.py::test_a_token_from_a_valid_tsa_outside_the_signer*",
        "tests/adversarial/test_certificate_attacks.py::test_a_token_over_another_signature_value_is_ref*",
        "tests/adversarial/test_certificate_attacks.py::test_a_token_without_certificates_needs_tsa_certs",
        "tests/adversarial/test_certificate_attacks.py::test_a_trust_root_whose_eku_excludes_code_signin*",
        "tests/adversarial/test_certificate_attacks.py::test_a_tsa_certificate_that_is_a_ca_is_refused",
        "tests/adversarial/test_certificate_attacks.py::test_a_tsa_certificate_whose_key_usage_cannot_si*",
        "tests/adversarial/test_certificate_attacks.py::test_a_tsa_certificate_with_a_non_critical_usage*",
        "tests/adversarial/test_certificate_attacks.py::test_a_tsa_certificate_with_a_second_usage_is_re*",
        "tests/adversarial/test_certificate_attacks.py::test_a_tsa_chain_through_a_client_auth_ca_is_ref*",
        "tests/adversarial/test_certificate_attacks.py::test_a_tsa_url_with_credentials_is_redacted_in_t*",
        "tests/adversarial/test_certificate_attacks.py::test_an_expired_intermediate_is_named_with_its_d*",
        "tests/adversarial/test_certificate_attacks.py::test_an_expired_tsa_intermediate_is_named",
        "tests/adversarial/test_certificate_attacks.py::test_an_identity_of_one_kind_never_matches_anoth*",
        "tests/adversarial/test_certificate_attacks.py::test_an_intermediate_whose_eku_excludes_code_sig*",
        "tests/adversarial/test_certificate_attacks.py::test_an_out_of_date_crl_proves_nothing",
        "tests/adversarial/test_certificate_attacks.py::test_an_oversized_signature_file_is_refused_unre*",
        "tests/adversarial/test_certificate_attacks.py::test_an_unparseable_identity_is_a_usage_error",
        "tests/adversarial/test_certificate_attacks.py::test_at_far_away_is_judged_or_refused",
        "tests/adversarial/test_certificate_attacks.py::test_control_a_cross_signed_root_verifies_from_e*",
        "tests/adversarial/test_certificate_attacks.py::test_control_a_gen_time_with_fractions_and_z_ver*",
        "tests/adversarial/test_certificate_attacks.py::test_control_a_generalized_signing_time_with_z_a*",
        "tests/adversarial/test_certificate_attacks.py::test_control_a_name_constrained_intermediate_vou*",
        "tests/adversarial/test_certificate_attacks.py::test_control_a_public_tsa_style_chain_verifies",
        "tests/adversarial/test_certificate_attacks.py::test_control_a_token_made_by_the_test_tsa_verifi*",
        "tests/adversarial/test_certificate_attacks.py::test_control_an_intermediate_that_may_issue_code*",
        "tests/adversarial/test_certificate_attacks.py::test_control_each_typed_identity_matches_its_own*",
        "tests/adversarial/test_certificate_attacks.py::test_control_the_same_certificates_twice_change_*",
        "tests/adversarial/test_certificate_attacks.py::test_openssl_cms_sign_with_cades_passes_the_gate",
        "tests/adversarial/test_certificate_attacks.py::test_openssl_cms_sign_without_cades_is_refused_f*",
        "tests/adversarial/test_certificate_attacks.py::test_rsassa_pss_parameters_that_do_not_fit_are_r*",
        "tests/adversarial/test_certificate_attacks.py::test_rsassa_pss_with_any_salt_length_verifies",
        "tests/adversarial/test_certificate_attacks.py::test_sign_refuses_such_a_certificate_before_sign*",
        "tests/adversarial/test_certificate_attacks.py::test_the_local_openssl_tsa_with_an_intermediate",
        "tests/adversarial/test_certificate_attacks.py::test_timestamp_command_takes_tsa_certs",
        "tests/adversarial/test_certificate_attacks.py::test_tsa_credentials_travel_in_a_header_and_neve*",
        "tests/adversarial/test_git_attacks.py::test_a_base_that_is_not_an_ancestor_checks_every_commit_*",
        "tests/adversarial/test_git_attacks.py::test_a_graft_file_is_refused",
        "tests/adversarial/test_git_attacks.py::test_a_grafts_environment_variable_and_git_dir_are_not_h*",
        "tests/adversarial/test_git_attacks.py::test_a_key_removed_on_the_second_parents_line_stays_remo*",
        "tests/adversarial/test_git_attacks.py::test_a_merge_cannot_bring_back_a_removed_key_without_a_p*",
        "tests/adversarial/test_git_attacks.py::test_a_merge_of_a_branch_that_rotated_a_key_passes_when_*",
        "tests/adversarial/test_git_attacks.py::test_a_merge_signed_by_a_key_removed_on_one_line_is_refu*",
        "tests/adversarial/test_git_attacks.py::test_a_planted_shallow_file_cannot_hide_commits",
        "tests/adversarial/test_git_attacks.py::test_a_range_reaching_a_shallow_boundary_is_an_error",
        "tests/adversarial/test_git_attacks.py::test_a_ref_to_a_commit_git_cannot_read_never_passes",
        "tests/adversarial/test_git_attacks.py::test_a_sha256_repository_verifies_and_a_sha1_header_ther*",
        "tests/adversarial/test_git_attacks.py::test_a_shallow_clone_cut_below_the_base_verifies",
        "tests/adversarial/test_git_attacks.py::test_a_swapped_loose_object_is_refused_not_read_as_the_c*",
        "tests/adversarial/test_git_attacks.py::test_a_tag_that_is_not_on_the_range_head_is_refused",
        "tests/adversarial/test_git_attacks.py::test_an_empty_range_proves_nothing_and_is_not_a_pass",
        "tests/adversarial/test_git_attacks.py::test_an_octopus_merge_is_judged_under_every_parents_poli*",
        "tests/adversarial/test_git_attacks.py::test_an_odd_file_name_cannot_hide_a_policy_change",
        "tests/adversarial/test_git_attacks.py::test_an_odd_file_name_cannot_hide_a_rules_path",
        "tests/adversarial/test_git_attacks.py::test_an_old_signed_tag_pushed_under_a_new_name_is_refused",
        "tests/adversarial/test_git_attacks.py::test_an_oversized_policy_blob_is_refused_by_its_size",
        "tests/adversarial/test_git_attacks.py::test_default_base_is_the_newest_tag_signed_under_the_fix*",
        "tests/adversarial/test_git_attacks.py::test_key_files_outside_the_policy_folder_are_refused",
        "tests/adversarial/test_git_attacks.py::test_odd_ranges_are_usage_errors",
        "tests/adversarial/test_git_attacks.py::test_replace_graft_cannot_hide_an_unsigned_commit",
        "tests/adversarial/test_git_attacks.py::test_replace_of_an_unsigned_commit_by_a_signed_one_is_no*",
        "tests/adversarial/test_git_attacks.py::test_replace_ref_of_a_commit_cannot_make_a_tampered_tree*",
        "tests/adversarial/test_git_attacks.py::test_with_both_signature_headers_only_this_formats_counts",
        "tests/adversarial/test_hostile_input.py::test_an_error_line_that_echoes_input_never_shows_a_cre*",
        "tests/adversarial/test_hostile_input.py::test_an_unreachable_credential_tsa_is_reported_without*",
        "tests/adversarial/test_hostile_input.py::test_hostile_policy_yaml_is_exit_2_with_file_and_line",
        "tests/adversarial/test_hostile_input.py::test_hostile_sealgate_yml_is_exit_2_with_file_and_line",
        "tests/adversarial/test_hostile_input.py::test_run_and_sign_with_a_credential_vault_address_show*",
        "tests/adversarial/test_hostile_input.py::test_run_with_credentials_in_the_tsa_url_and_vault_env*",
        "tests/adversarial/test_signature_attacks.py::test_commits_gate_on_openpgp_signature_tricks",
        "tests/adversarial/test_signature_attacks.py::test_packet_walker_raises_only_typed_errors",
        "tests/adversarial/test_workspace_attacks.py::test_core_worktree_cannot_aim_the_proof_at_a_clean*",
        "tests/adversarial/test_workspace_attacks.py::test_declared_outputs_and_caches_from_sealgate_yml",
        "tests/adversarial/test_workspace_attacks.py::test_edited_file_in_a_submodule_whose_head_is_unch*",
        "tests/adversarial/test_workspace_attacks.py::test_file_created_and_deleted_in_a_new_directory",
        "tests/adversarial/test_workspace_attacks.py::test_file_name_cannot_inject_a_workflow_command",
        "tests/adversarial/test_workspace_attacks.py::test_file_names_with_newlines_control_bytes_and_in*",
        "tests/adversarial/test_workspace_attacks.py::test_forged_commit_object_in_the_submodule_store",
        "tests/adversarial/test_workspace_attacks.py::test_honest_build_control",
        "tests/adversarial/test_workspace_attacks.py::test_honest_submodule_passes",
        "tests/adversarial/test_workspace_attacks.py::test_nested_submodule_differences_name_the_full_pa*",
        "tests/adversarial/test_workspace_attacks.py::test_parent_of_the_work_tree_renamed_away_and_back",
        "tests/adversarial/test_workspace_attacks.py::test_same_size_overwrite_in_place_and_restore",
        "tests/adversarial/test_workspace_attacks.py::test_stale_ignored_pyc_present_before_the_build",
        "tests/adversarial/test_workspace_attacks.py::test_submodule_head_forged_to_the_gitlink",
        "tests/adversarial/test_workspace_attacks.py::test_submodule_not_checked_out",
        "tests/adversarial/test_workspace_attacks.py::test_submodule_read_from_the_superprojects_modules*",
        "tests/adversarial/test_workspace_attacks.py::test_submodule_replaced_by_a_symlink",
        "tests/adversarial/test_workspace_attacks.py::test_submodules_refuse",
        "tests/adversarial/test_workspace_attacks.py::test_tracked_directory_renamed_away_and_back",
        "tests/adversarial/test_workspace_attacks.py::test_tracked_directory_replaced_by_a_symlink_to_a_*",
        "tests/adversarial/test_workspace_attacks.py::test_tracked_file_made_executable_and_back",
        "tests/adversarial/test_workspace_attacks.py::test_tracked_file_with_a_hard_link_refuses_the_bui*",
        "tests/adversarial/test_workspace_attacks.py::test_work_tree_renamed_away_and_back",
        "tests/fuzz/test_fuzz_cms.py::test_cms_parser_raises_only_typed_errors",
        "tests/fuzz/test_fuzz_cms.py::test_tsa_response_check_raises_only_typed_errors",
        "tests/fuzz/test_fuzz_cms.py::test_tsa_token_check_raises_only_typed_errors",
        "tests/fuzz/test_fuzz_envelopes.py::test_archive_diff_never_raises",
        "tests/fuzz/test_fuzz_envelopes.py::test_dsse_raises_only_typed_errors",
        "tests/fuzz/test_fuzz_envelopes.py::test_vsa_parser_on_reshaped_json_raises_only_typed_errors",
        "tests/fuzz/test_fuzz_envelopes.py::test_vsa_parser_raises_only_typed_errors",
        "tests/fuzz/test_fuzz_git.py::test_commit_splitting_and_parsing_raise_only_typed_errors",
        "tests/fuzz/test_fuzz_git.py::test_openpgp_key_loading_raises_only_typed_errors",
        "tests/fuzz/test_fuzz_git.py::test_openpgp_verify_raises_only_typed_errors",
        "tests/fuzz/test_fuzz_git.py::test_ssh_public_key_lines_raise_only_typed_errors",
        "tests/fuzz/test_fuzz_git.py::test_sshsig_raises_only_typed_errors",
        "tests/fuzz/test_fuzz_git.py::test_tag_splitting_and_parsing_raise_only_typed_errors",
        "tests/fuzz/test_fuzz_git.py::test_tree_parsing_raises_only_typed_errors",
        "tests/fuzz/test_fuzz_policy.py::test_allowed_signers_import_raises_only_input_errors",
        "tests/fuzz/test_fuzz_policy.py::test_policy_key_files_raise_only_input_errors",
        "tests/fuzz/test_fuzz_policy.py::test_policy_loader_raises_only_input_errors",
        "tests/fuzz/test_fuzz_policy.py::test_sealgate_yml_reader_raises_only_usage_errors",
        "tests/fuzz/test_fuzz_policy.py::test_sequoia_import_raises_only_input_errors",
        "tests/fuzz/test_fuzz_policy.py::test_yaml_loader_raises_only_input_errors",
        "tests/sealgate/test_attest.py::test_a_failed_verdict_blocks_even_when_the_signature_verifies",
        "tests/sealgate/test_attest.py::test_a_tampered_envelope_fails_with_its_reason",
        "tests/sealgate/test_attest.py::test_an_envelope_signed_by_another_key_fails",
        "tests/sealgate/test_attest.py::test_attest_verify_passes_with_the_key_uri_and_with_the_certificate",
        "tests/sealgate/test_attest.py::test_random_corruptions_never_verify_to_other_content",
        "tests/sealgate/test_attest.py::test_unreadable_input_is_a_usage_error",
        "tests/integrity/test_attest_checks.py::test_attest_needs_a_key_before_any_work",
        "tests/integrity/test_attest_checks.py::test_tree_attestation_records_the_verdict",
        "tests/integrity/test_attest_checks.py::test_watch_and_rebuild_attest_their_outputs",
        "tests/signer/test_awskms.py::test_ecdsa_sign_digest_request_flow",
        "tests/signer/test_awskms.py::test_endpoint_from_aws_endpoint_url",
        "tests/signer/test_awskms.py::test_malformed_uris",
        "tests/signer/test_awskms.py::test_public_key_type_by_id_and_alias",
        "tests/signer/test_awskms.py::test_rsa_sign_digest_request_flow",
        "tests/signer/test_awskms.py::test_sign_errors_are_typed",
        "tests/signer/test_awskms.py::test_sign_many_signs_each_payload",
        "tests/signer/test_awskms.py::test_unknown_key_is_a_config_error",
        "tests/signer/test_awskms.py::test_unreachable_endpoint_is_backend_unavailable",
        "tests/signer/test_awskms.py::test_unsupported_keys_are_refused",
        "tests/sealgate/test_cli_errors.py::test_a_field_error_through_the_cli_shows_code_and_flag",
        "tests/sealgate/test_cli_errors.py::test_a_field_error_with_json_carries_the_field",
        "tests/sealgate/test_cli_errors.py::test_a_file_name_that_is_not_utf8_under_a_strict_locale",
        "tests/sealgate/test_cli_errors.py::test_a_reader_that_goes_away_is_no_traceback_and_no_pass",
        "tests/sealgate/test_cli_errors.py::test_an_os_error_in_a_subdirectory_of_a_file_is_exit_2",
        "tests/sealgate/test_cli_errors.py::test_sign_a_file_name_longer_than_the_system_allows",
        "tests/sealgate/test_cli_errors.py::test_sign_json_prints_the_error_document",
        "tests/sealgate/test_cli_errors.py::test_sign_out_dir_that_is_a_file",
        "tests/sealgate/test_cli_errors.py::test_verify_a_file_name_longer_than_the_system_allows",
        "tests/sealgate/test_cli_errors.py::test_verify_reads_the_shared_variables_as_run_does",
        "tests/integrity/test_commits.py::test_bad_ranges",
        "tests/integrity/test_commits.py::test_cache_reuses_verdicts_and_no_cache_bypasses",
        "tests/integrity/test_commits.py::test_forge_merges_are_accepted_only_when_the_policy_enables_them",
        "tests/integrity/test_commits.py::test_key_removed_by_a_policy_admin_and_a_back_dated_commit",
        "tests/integrity/test_commits.py::test_long_range_verified_on_all_cores_gives_the_same_verdicts",
        "tests/integrity/test_commits.py::test_merge_commits_are_checked_each_on_their_own",
        "tests/integrity/test_commits.py::test_openpgp_signed_commits_and_signed_tag",
        "tests/integrity/test_commits.py::test_policy_change_by_a_non_admin_fails_and_does_not_take_effect",
        "tests/integrity/test_commits.py::test_policy_errors_name_file_and_line",
        "tests/integrity/test_commits.py::test_rotating_a_key_file_is_a_policy_change",
        "tests/integrity/test_commits.py::test_rules_need_a_role_for_protected_paths",
        "tests/integrity/test_commits.py::test_signed_history_verifies_and_failures_are_named",
        "tests/integrity/test_commits.py::test_ssh_signature_with_the_wrong_namespace",
        "tests/integrity/test_commits.py::test_valid_signature_over_a_modified_commit_is_refused",
        "tests/integrity/test_commits.py::test_verdicts_match_git_log_on_a_valid_ssh_history",
        "tests/integrity/test_commits.py::test_x509_signatures_are_unsupported_never_valid",
        "tests/signer/test_hashivault.py::test_5xx_is_retried_then_backend_unavailable",
        "tests/signer/test_hashivault.py::test_5xx_then_success_recovers",
        "tests/signer/test_hashivault.py::test_cli_exit_codes_hide_the_token",
        "tests/signer/test_hashivault.py::test_cli_sign_verifies_with_openssl",
        "tests/signer/test_hashivault.py::test_pss_salt_is_the_digest_length",
        "tests/signer/test_hashivault.py::test_sign_many_uses_one_batch_request",
        "tests/signer/test_hashivault.py::test_signatures_verify_against_the_published_public_key",
        "tests/integrity/test_integrity_paths.py::test_a_bare_repository_has_objects_but_no_work_tree",
        "tests/integrity/test_integrity_paths.py::test_a_repository_that_cannot_be_read_is_exit_2_eacces",
        "tests/sealgate/test_keys_command.py::test_csr_is_signed_by_the_hsm_key",
        "tests/sealgate/test_keys_command.py::test_demo_runs_the_main_job",
        "tests/test_lint.py::test_linter_is_clean",
        "tests/integrity/test_openpgp.py::test_corruptions_raise_only_signature_errors",
        "tests/integrity/test_openpgp.py::test_many_verifications_are_fast",
        "tests/sealgate/test_pipeline_errors.py::test_a_nul_byte_in_sealgate_yml_is_a_usage_error",
        "tests/sealgate/test_pipeline_errors.py::test_a_report_name_longer_than_the_system_allows",
        "tests/sealgate/test_pipeline_errors.py::test_a_repository_that_is_a_file",
        "tests/sealgate/test_pipeline_errors.py::test_an_artifact_name_that_is_not_utf8",
        "tests/sealgate/test_pipeline_errors.py::test_control_one_missing_level_is_created_for_the_report_and_the*",
        "tests/sealgate/test_pipeline_verify_options.py::test_an_identity_that_does_not_match_fails_the_verify_st*",
        "tests/sealgate/test_pipeline_verify_options.py::test_identity_from_the_environment_as_verify_reads_it",
        "tests/sealgate/test_pipeline_verify_options.py::test_level_audit_turns_the_revocation_into_a_warning",
        "tests/sealgate/test_plugins.py::test_action_fails_on_an_unsigned_commit_and_a_modified_workspace_under_a*",
        "tests/sealgate/test_plugins.py::test_action_signs_and_gates_under_act",
        "tests/sealgate/test_plugins.py::test_component_gate_blocks_a_tampered_artifact_under_gitlab_ci_local",
        "tests/sealgate/test_plugins.py::test_component_gate_blocks_an_unsigned_artifact_under_gitlab_ci_local",
        "tests/sealgate/test_plugins.py::test_component_signs_and_gates_under_gitlab_ci_local",
        "tests/sealgate/test_plugins.py::test_component_stops_at_a_modified_workspace_under_gitlab_ci_local",
        "tests/sealgate/test_plugins.py::test_component_stops_at_an_unsigned_commit_under_gitlab_ci_local",
        "tests/sealgate/test_plugins.py::test_schema",
        "tests/integrity/test_policy_command.py::test_check_names_the_bad_line",
        "tests/integrity/test_policy_command.py::test_check_never_names_a_flag_it_was_not_given",
        "tests/integrity/test_policy_command.py::test_import_allowed_signers_then_check",
        "tests/integrity/test_rebuild.py::test_an_older_commit_is_fetched_by_id_not_taken_from_the_workspace",
        "tests/integrity/test_rebuild.py::test_artifact_glob_matching_nothing_is_named",
        "tests/integrity/test_rebuild.py::test_artifact_missing_from_the_rebuild",
        "tests/integrity/test_rebuild.py::test_build_command_not_found",
        "tests/integrity/test_rebuild.py::test_commit_missing_from_a_shallow_clone_says_so",
        "tests/integrity/test_rebuild.py::test_environment_is_normalised_and_the_clone_is_fresh",
        "tests/integrity/test_rebuild.py::test_failed_build_exits_1_and_shows_the_log_tail",
        "tests/integrity/test_rebuild.py::test_tampered_workspace_wheel_is_a_mismatch_naming_the_member",
        "tests/integrity/test_rebuild.py::test_time_stamped_zip_is_not_reproducible_and_the_member_is_named",
        "tests/integrity/test_rebuild.py::test_wheel_built_with_source_date_epoch_is_reproduced",
        "tests/sealgate/test_run.py::test_a_modified_source_fails_the_tree_stage_and_nothing_is_signed",
        "tests/sealgate/test_run.py::test_an_unsigned_commit_stops_the_pipeline_before_signing",
        "tests/sealgate/test_run.py::test_configuration_from_sealgate_yml_and_the_pin_stays_secret",
        "tests/sealgate/test_run.py::test_default_range_starts_at_the_newest_tag_signed_under_the_fixed_policy",
        "tests/sealgate/test_run.py::test_stages_switched_off_by_flags_and_environment",
        "tests/sealgate/test_run.py::test_the_whole_pipeline_signs_verifies_and_reports",
        "tests/signer/test_sign_errors.py::test_a_module_path_that_is_not_a_pkcs11_library_is_configuration",
        "tests/signer/test_sign_errors.py::test_a_module_path_the_os_refuses_is_a_path_error",
        "tests/signer/test_sign_errors.py::test_certificate_file_that_is_not_a_certificate",
        "tests/signer/test_sign_errors.py::test_certificate_of_another_key",
        "tests/signer/test_sign_errors.py::test_certificate_without_any_eku",
        "tests/signer/test_sign_errors.py::test_certificate_without_code_signing_eku",
        "tests/signer/test_sign_errors.py::test_directory_is_not_an_artifact",
        "tests/signer/test_sign_errors.py::test_expired_certificate",
        "tests/signer/test_sign_errors.py::test_key_without_certificate_anywhere",
        "tests/signer/test_sign_errors.py::test_missing_artifact_fails_the_whole_batch",
        "tests/signer/test_sign_errors.py::test_missing_key_option",
        "tests/signer/test_sign_errors.py::test_missing_module",
        "tests/signer/test_sign_errors.py::test_missing_object",
        "tests/signer/test_sign_errors.py::test_missing_token",
        "tests/signer/test_sign_errors.py::test_pin_from_environment",
        "tests/signer/test_sign_errors.py::test_signature_path_blocked_by_a_directory",
        "tests/signer/test_sign_errors.py::test_two_artifacts_with_one_signature_path",
        "tests/signer/test_sign_errors.py::test_unknown_uri_scheme",
        "tests/signer/test_sign_errors.py::test_unreadable_artifact",
        "tests/signer/test_sign_errors.py::test_wrong_pin_names_the_token_and_hides_the_pin",
        "tests/signer/test_sign_pkcs11.py::test_batch_json_report_and_out_dir",
        "tests/signer/test_sign_pkcs11.py::test_certificate_comes_from_the_token_when_cert_is_not_given",
        "tests/signer/test_sign_pkcs11.py::test_ed25519_signs_rfc8419_cms",
        "tests/signer/test_sign_pkcs11.py::test_ess_certificate_identifier_names_the_issuer",
        "tests/signer/test_sign_pkcs11.py::test_openssl_verifies_every_key_type_and_rejects_a_flipped_byte",
        "tests/signer/test_sign_pkcs11.py::test_remote_hsm_down_is_an_infrastructure_failure",
        "tests/signer/test_sign_pkcs11.py::test_remote_hsm_through_p11_kit_server",
        "tests/signer/test_sign_pkcs11.py::test_untrusted_root_is_refused_by_openssl",
        "tests/signer/test_signer_http.py::test_the_budget_holds_against_a_server_that_trickles_its_headers",
        "tests/signer/test_signer_http.py::test_the_budget_holds_against_a_tsa_that_accepts_and_never_answers",
        "tests/signer/test_signer_http.py::test_the_budget_holds_through_an_http_proxy",
        "tests/signer/test_signer_http.py::test_the_watchdog_leaves_no_thread_behind",
        "tests/signer/test_signer_outputs.py::test_a_signature_gets_the_mode_open_would_give_under_the_umask",
        "tests/signer/test_signer_outputs.py::test_a_symlink_at_the_signature_path_lends_it_neither_mode_nor_co*",
        "tests/signer/test_signer_outputs.py::test_an_out_dir_name_longer_than_the_system_allows",
        "tests/signer/test_signer_outputs.py::test_timestamping_a_signature_path_the_os_refuses",
        "tests/signer/test_signer_outputs.py::test_timestamping_later_keeps_the_signature_file_mode",
        "tests/integrity/test_sshsig.py::test_corrupted_blob_never_verifies",
        "tests/integrity/test_sshsig.py::test_corruption_never_verifies",
        "tests/integrity/test_sshsig.py::test_random_blobs_raise_only_signature_error",
        "tests/integrity/test_sshsig.py::test_rsa_sha1_signature_refused",
        "tests/integrity/test_sshsig.py::test_rsa_sha2_signature_types",
        "tests/signer/test_timestamp.py::test_a_timestamp_has_one_json_shape_with_a_redacted_url",
        "tests/signer/test_timestamp.py::test_batch_reuses_connections_and_runs_concurrently",
        "tests/signer/test_timestamp.py::test_every_bad_tsa_fails_closed",
        "tests/signer/test_timestamp.py::test_failover_to_the_next_tsa",
        "tests/signer/test_timestamp.py::test_one_line_per_tsa_when_none_answers",
        "tests/signer/test_timestamp.py::test_retries_with_backoff_until_the_tsa_recovers",
        "tests/signer/test_timestamp.py::test_timestamp_an_existing_signature_later",
        "tests/signer/test_timestamp.py::test_timestamp_refuses_what_is_not_a_signature",
        "tests/signer/test_timestamp.py::test_timestamped_signature_verifies_with_stock_openssl",
        "tests/signer/test_timestamp.py::test_tsa_options_are_checked",
        "tests/signer/test_timestamp.py::test_tsa_roots_must_be_ca_certificates",
        "tests/integrity/test_tree.py::test_an_older_commit_is_compared_as_asked",
        "tests/integrity/test_tree.py::test_bad_input",
        "tests/integrity/test_tree.py::test_clean_checkout_matches_and_recomputes_git_tree_id",
        "tests/integrity/test_tree.py::test_declared_outputs_may_exist",
        "tests/integrity/test_tree.py::test_every_drift_is_named",
        "tests/sealgate/test_tsa_fixture.py::test_all_modes_side_by_side_and_nothing_left_running",
        "tests/sealgate/test_tsa_fixture.py::test_concurrent_queries_get_distinct_serials",
        "tests/sealgate/test_tsa_fixture.py::test_good_tsa_grants_a_token_openssl_verifies",
        "tests/sealgate/test_idtoken.py::test_github_endpoint_down_is_exit_3",
        "tests/sealgate/test_idtoken.py::test_github_endpoint_refusals_and_garbage",
        "tests/sealgate/test_idtoken.py::test_what_is_not_a_jwt_is_refused_without_echoing_it",
        "tests/sealgate/test_sign_service.py::test_503_with_a_fixed_token_is_one_request_and_says_the_token_is_spent",
        "tests/sealgate/test_sign_service.py::test_503_with_github_tokens_retries_with_a_fresh_token",
        "tests/sealgate/test_sign_service.py::test_a_bent_answer_writes_nothing",
        "tests/sealgate/test_sign_service.py::test_a_bent_answer_writes_nothing[_double-1-service-signature-invalid-two",
        "tests/sealgate/test_sign_service.py::test_a_bent_answer_writes_nothing[_drop-1-service-signature-invalid-no",
        "tests/sealgate/test_sign_service.py::test_a_bent_answer_writes_nothing[_not_base64-3-bad-answer-not",
        "tests/sealgate/test_sign_service.py::test_a_bent_answer_writes_nothing[_other_digest-1-digest-mismatch-another",
        "tests/sealgate/test_sign_service.py::test_a_bent_answer_writes_nothing[_other_key_name-1-service-signature-invalid-for",
        "tests/sealgate/test_sign_service.py::test_a_bent_answer_writes_nothing[_receipt_denied-3-receipt-mismatch-allowed",
        "tests/sealgate/test_sign_service.py::test_a_bent_answer_writes_nothing[_receipt_for_others-3-receipt-mismatch-other",
        "tests/sealgate/test_sign_service.py::test_a_bent_answer_writes_nothing[_receipt_other_outputs-3-receipt-mismatch-other",
        "tests/sealgate/test_sign_service.py::test_a_bent_answer_writes_nothing[_stranger-1-service-signature-invalid-not",
        "tests/sealgate/test_sign_service.py::test_a_bent_answer_writes_nothing[_swap_p7s-1-digest-mismatch-digest",
        "tests/sealgate/test_sign_service.py::test_a_certificate_of_our_ca_without_code_signing",
        "tests/sealgate/test_sign_service.py::test_a_huge_answer_is_cut_off",
        "tests/sealgate/test_sign_service.py::test_a_redirect_is_not_followed",
        "tests/sealgate/test_sign_service.py::test_a_service_message_cannot_echo_the_token_or_forge_log_lines",
        "tests/sealgate/test_sign_service.py::test_a_signature_by_another_key_under_our_certificate",
        "tests/sealgate/test_sign_service.py::test_a_signature_over_another_digest_with_our_digest_in_the_json",
        "tests/sealgate/test_sign_service.py::test_a_token_for_another_audience_is_not_sent",
        "tests/sealgate/test_sign_service.py::test_an_attached_signature_is_not_a_detached_one",
        "tests/sealgate/test_sign_service.py::test_answer_in_another_order_is_matched_by_name",
        "tests/sealgate/test_sign_service.py::test_https_service_is_verified_before_the_token_is_sent",
        "tests/sealgate/test_sign_service.py::test_local_signing_options_are_refused_with_service",
        "tests/sealgate/test_sign_service.py::test_nobody_listening_is_exit_3_and_safe_to_retry",
        "tests/sealgate/test_sign_service.py::test_service_refusals_keep_the_service_code",
        "tests/sealgate/test_sign_service.py::test_tsa_roots_given_but_no_timestamp_came_back",
        "tests/service/test_app.py::test_403_for_each_claim_the_grant_pins_or_the_release_key_refuses",
        "tests/service/test_app.py::test_503_when_the_tsa_is_down_signs_nothing_and_leaves_the_token_usable",
        "tests/service/test_app.py::test_a_matching_grant_signs_and_each_p7s_verifies_with_openssl_and_sealgate_verify",
        "tests/service/test_app.py::test_answers_carry_a_request_id_and_the_security_headers",
        "tests/service/test_audit_canonical.py::test_canonical_is_rfc8785_for_any_json",
        "tests/service/test_audit_cli.py::test_prove_checks_a_receipt_against_a_kept_checkpoint",
        "tests/service/test_audit_cli.py::test_tampering_in_the_database_and_a_rewrite_caught_by_the_kept_checkpoints",
        "tests/service/test_audit_cli.py::test_verify_never_makes_a_store_in_an_empty_postgresql_database",
        "tests/service/test_audit_cli.py::test_verify_passes_on_the_database_and_on_its_export",
        "tests/service/test_audit_merkle.py::test_consistency_for_every_pair",
        "tests/service/test_audit_merkle.py::test_roots_and_inclusion_for_every_size_and_index",
        "tests/service/test_audit_verify.py::test_proof_requests_outside_the_log_are_typed_refusals",
        "tests/service/test_auth.py::test_a_slow_drip_jwks_meets_the_fetch_deadline",
        "tests/service/test_auth.py::test_an_absurd_exp_is_refused_not_a_crash",
        "tests/service/test_auth.py::test_each_required_claim_is_required",
        "tests/service/test_auth.py::test_malformed_tokens_are_refused",
        "tests/service/test_service_config.py::test_a_deeply_nested_document_is_refused_not_a_crash",
        "tests/service/test_store_postgres.py::test_a_database_restart_costs_one_retryable_503_and_the_chain_goes_on",
        "tests/service/test_store_postgres.py::test_a_replica_stuck_inside_an_append_cannot_block_the_others_for_ever",
        "tests/signer/test_verify_gate.py::test_a_crl_of_another_ca_is_not_about_this_signer",
        "tests/signer/test_verify_gate.py::test_a_token_added_later_verifies_while_the_certificate_is_valid",
        "tests/signer/test_verify_gate.py::test_a_token_proves_the_signature_outlives_its_certificate",
        "tests/signer/test_verify_gate.py::test_audit_level_never_excuses_integrity_or_authenticity",
        "tests/signer/test_verify_gate.py::test_audit_level_turns_time_class_failures_into_warnings",
        "tests/signer/test_verify_gate.py::test_identity_matches_the_san_email",
        "tests/signer/test_verify_gate.py::test_identity_matches_the_subject_as_rfc4514",
        "tests/signer/test_verify_gate.py::test_json_report_shape",
        "tests/signer/test_verify_gate.py::test_one_bad_artifact_fails_the_batch_and_the_others_are_still_repor*",
        "tests/signer/test_verify_gate.py::test_the_gate_blocks_tampering_with_its_reason",
        "tests/signer/test_verify_gate.py::test_the_timestamped_signature_still_passes_stock_openssl",
        "tests/signer/test_verify_inputs.py::test_a_crl_that_is_no_crl_is_an_input_error_with_its_code",
        "tests/signer/test_verify_inputs.py::test_a_dangling_symlink_is_a_missing_artifact_and_says_so",
        "tests/signer/test_verify_inputs.py::test_a_device_is_not_a_file",
        "tests/signer/test_verify_inputs.py::test_a_directory_is_not_a_file_and_never_unsigned",
        "tests/signer/test_verify_inputs.py::test_a_fifo_is_not_a_file_and_does_not_hang",
        "tests/signer/test_verify_inputs.py::test_a_file_used_as_a_folder_is_a_path_error",
        "tests/signer/test_verify_inputs.py::test_a_missing_artifact_is_an_input_error_naming_it",
        "tests/signer/test_verify_inputs.py::test_a_missing_signature_folder_is_an_input_error_not_unsigned",
        "tests/signer/test_verify_inputs.py::test_a_missing_signature_is_a_failure_named_unsigned",
        "tests/signer/test_verify_inputs.py::test_a_name_longer_than_the_system_allows_is_a_path_error",
        "tests/signer/test_verify_inputs.py::test_a_pem_signature_says_der_is_expected_and_the_conversion_works",
        "tests/signer/test_verify_inputs.py::test_a_signature_that_is_a_directory_is_not_a_file",
        "tests/signer/test_verify_inputs.py::test_a_signature_that_links_to_nothing_is_unsigned",
        "tests/signer/test_verify_inputs.py::test_a_socket_is_not_a_file",
        "tests/signer/test_verify_inputs.py::test_a_symlink_loop_is_a_path_error",
        "tests/signer/test_verify_inputs.py::test_a_symlink_to_a_directory_is_not_a_file",
        "tests/signer/test_verify_inputs.py::test_an_artifact_whose_signature_name_is_too_long_is_a_path_error",
        "tests/signer/test_verify_inputs.py::test_an_os_error_on_a_trust_file_is_a_path_error_naming_it",
        "tests/signer/test_verify_inputs.py::test_the_batch_exit_code_is_the_worst_and_every_artifact_is_report*",
        "tests/signer/test_verify_properties.py::test_a_corrupted_response_raises_only_verification_error",
        "tests/signer/test_verify_properties.py::test_a_corrupted_signature_never_verifies_and_never_raises",
        "tests/signer/test_verify_properties.py::test_every_single_bit_flip_is_refused",
        "tests/integrity/test_watch.py::test_build_command_not_found_is_a_usage_error",
        "tests/integrity/test_watch.py::test_failing_build_exit_status_wins",
        "tests/integrity/test_watch.py::test_honest_build_passes",
        "tests/integrity/test_watch.py::test_new_directory_and_file_during_build_are_reported",
        "tests/integrity/test_watch.py::test_new_directory_removed_before_the_end_is_still_reported",
        "tests/integrity/test_watch.py::test_rename_over_a_tracked_path_and_back_is_caught",
        "tests/integrity/test_watch.py::test_sunspot_swap_and_restore_is_caught_by_the_watch",
    }
)

_skipped: list[str] = []
_before_run: set[int] = set()  # the pids alive when the run began: never the run's own


@pytest.fixture(scope="session")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> HsmFixture:
    """One SoftHSM2 token for the run, with EC, RSA and Ed25519 keys and their certificates."""
    return make_hsm(tmp_path_factory.mktemp("softhsm"))


@pytest.fixture(scope="session")
def remote(hsm: HsmFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteHsm]:
    """The same token behind `p11-kit server`, reached through p11-kit-client.so."""
    yield from remote_hsm(hsm, tmp_path_factory.mktemp("p11kit"))


@pytest.fixture(scope="session")
def tsa_pki(tmp_path_factory: pytest.TempPathFactory) -> TsaPki:
    """The local TSAs' own CA (`root_pem` is what --tsa-roots trusts) and their certificates."""
    return make_tsa_pki(tmp_path_factory.mktemp("tsa"))


@pytest.fixture(scope="session")
def tsas(tsa_pki: TsaPki) -> Iterator[dict[str, LocalTsa]]:
    """One running local TSA per mode (good, rsa, ess_v1 and every broken one), side by side."""
    servers: dict[str, LocalTsa] = {mode: LocalTsa(tsa_pki, mode, delay=3.0) for mode in MODES}
    try:
        for server in servers.values():
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="session")
def tsa(tsas: dict[str, LocalTsa]) -> LocalTsa:
    """The good local TSA: `openssl ts -reply` behind HTTP."""
    return tsas["good"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tiers.mark(
        items,
        component_fixtures=COMPONENT_FIXTURES,
        component_calls=COMPONENT_CALLS,
        plugin_calls=PLUGIN_CALLS,
        slow=SLOW,
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionstart(session: pytest.Session) -> None:
    _before_run.update(leftovers.pids())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """A test that made a GnuPG home in its tmp_path stops that home's daemons when it ends."""
    yield
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if isinstance(tmp_path, Path) and shutil.which("gpgconf"):
        leftovers.stop_gpg_daemons(tmp_path)


def _fail_on_leftovers(session: pytest.Session, base: Path) -> None:
    """After every fixture is torn down: a process the run started that still lives fails it."""
    found = leftovers.find(os.getpid(), _before_run, base)
    if not found:
        return
    leftovers.kill(found)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
    print(f"\n{len(found)} process(es) the tests started outlived them (now killed):")
    for leftover in found:
        print(f"  pid {leftover.pid} ({leftover.why}): {leftover.command}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    base = factory.getbasetemp() if factory is not None else None
    if base is not None and shutil.which("gpgconf"):
        leftovers.stop_gpg_daemons(base)  # module- and session-scoped homes
    if base is not None:
        _fail_on_leftovers(session, base)
    if IN_CI and _skipped:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nCI=true and {len(_skipped)} test(s) were skipped; a skip is a failure here:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
