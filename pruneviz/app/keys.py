"""Every st.session_state key the app uses, in one place (plain strings: no streamlit here).

A widget's `key=` is a session-state key too, so the widget keys of every page are here
as well. Keys of one page share a prefix; the Prune page's widget keys are built by
`widget_key` so that other pages (Trade-offs, Sensitivity) can reset them.
"""

from __future__ import annotations

# -- the tab: model, workbench, experiments, weights -----------------------------------------
MODEL_KEY = "pv_model_ref"
MODEL_WIDGET_KEY = "pv_model_picker"
WORKSPACE_KEY = "pv_workspace"  # this tab's Workspace: workbench, experiment log, weights
SELECTED_LAYER_KEY = "pv_selected_layer"
COMPARISON_KEY = "pv_budget_comparison"  # the Sensitivity page's last budget comparison
TUNED_KEY = "pv_tuned_weights"  # {bench key: {name: state dict}}: this tab's fine-tuned weights
UPLOAD_KEY = "pv_upload"  # weights uploaded in this tab (an Upload)
DATA_UPLOAD_KEY = "pv_data_uploads"  # {(model ref, split): DataUpload} uploaded in this tab
SUBSET_KEY = "pv_eval_subset"  # {model ref: live evaluation subset size} chosen in this tab
BENCH_ID_KEY = "pv_bench_id"  # what the tab's workbench was built from
KEPT_KEY = "pv_kept_workspaces"  # {bench id: Workspace} the tab switched away from
WORKERS_KEY = "pv_sensitivity_workers"  # {bench key: SensitivityWorker}
FINETUNE_WORKERS_KEY = "pv_finetune_workers"  # {bench key: FinetuneWorker}
SWEEP_WORKERS_KEY = "pv_sweep_workers"  # {bench key: SweepWorker}
EXPORT_WORKERS_KEY = "pv_export_workers"  # {bench key: ExportWorker}
SAVED_KEY = "pv_saved"  # the tab's saved workspace (a SavedLink)
REOPEN_NOTE_KEY = "pv_reopen_note"  # what reopening a saved workspace could not restore

# -- the tab's language and view (app/language.py) ------------------------------------------
LANGUAGE_KEY = "pv_language"  # "en" or "zh-CN": the tab's language, from ?lang= or the sidebar
LANGUAGE_WIDGET_KEY = "pv_language_picker"
CLASSROOM_VIEW_KEY = "pv_classroom_view"  # larger text for a projector (?view=classroom)

# -- Learn page (app/lessons) -----------------------------------------------------------------
LESSON_KEY = "pv_lesson"  # the lesson on screen (its key), from ?lesson= or the picker
LESSON_PICKER_KEY = "pv_lesson_picker"
LESSON_STATE_KEY = "pv_lessons"  # {lesson key: {step: Revealed}}: predictions and results
LESSONS_DONE_KEY = "pv_lessons_done"  # set of the lesson keys finished in this tab


def lesson_widget_key(lesson: str, name: str) -> str:
    """The key of a widget of a lesson (reset clears them all)."""
    return f"pv_lesson_{lesson}_{name}"


# -- Workspaces page -------------------------------------------------------------------------
WS_NAME_KEY = "pv_ws_name"
WS_IMPORT_KEY = "pv_ws_import"
WS_CONFIRM_KEY = "pv_ws_confirm"  # the saved workspace a Delete asks to confirm

# -- classroom mode: who this session is (app/login.py) ------------------------------------
USER_KEY = "pv_user"  # who this session's long jobs are queued for (a student's name)
ADMITTED_KEY = "pv_admitted"  # True once the session gave the access code
LOGIN_FAILURES_KEY = "pv_login_failures"  # when this session's last wrong codes came
EXPORTS_SUBFOLDER_KEY = "pv_exports_subfolder"  # this session's folder under the exports

# -- Prune page ------------------------------------------------------------------------------
PREFIX = "pv_w_"  # every Prune page control: cleared to re-seed them from the current plan


def widget_key(kind: str, layer: str | None = None) -> str:
    """The session-state key of a Prune page widget (per layer when `layer` is given)."""
    return f"{PREFIX}{kind}" if layer is None else f"{PREFIX}{kind}::{layer}"


METRICS_BAR_KEY = "pv_metrics_bar"  # the Prune page's sticky metrics container
SCOPE_NOTE_KEY = "pv_scope_note"  # where the plan a scope switch replaced is kept (once)
PRUNE_BODY_KEY = "pv_prune_body"  # the Prune page's controls and layer view, side by side
PRUNE_RESET_KEY = "pv_reset"
PRUNE_HIST_KEY = "prune_hist"
PRUNE_SCORES_KEY = "prune_scores"

# -- Model page ------------------------------------------------------------------------------
UPLOAD_WIDGET_KEY = "pv_weights_upload"
DATA_FLASH_KEY = "pv_data_flash"  # what the last data upload did, shown once


def data_widget_key(kind: str, split: str) -> str:
    """The Model page's data upload widget `kind` (file, label, idx, use, reset) of `split`
    ("evaluation" or "training")."""
    return f"pv_data_{kind}::{split}"

# -- Inspect page ----------------------------------------------------------------------------
INSPECT_GRAN_KEY = "pv_inspect_gran"
INSPECT_CRIT_KEY = "pv_inspect_crit"
INSPECT_LOGY_KEY = "pv_inspect_logy"
INSPECT_HIST_KEY = "inspect_hist"
INSPECT_SCORES_KEY = "inspect_scores"
INSPECT_DISAGREE_KEY = "inspect_disagree"
INSPECT_OVERVIEW_KEY = "inspect_overview"
INSPECT_KERNELS_KEY = "inspect_kernels"


def inspect_amount_key(layer: str) -> str:
    """The Inspect page's preview amount of `layer`."""
    return f"pv_inspect_amount::{layer}"


# -- Sensitivity page ------------------------------------------------------------------------
SENS_GRAN_KEY = "pv_sens_gran"
SENS_CRIT_KEY = "pv_sens_crit"
SENS_LEVELS_KEY = "pv_sens_levels"
SENS_RUN_KEY = "pv_sens_run"
SENS_CANCEL_KEY = "pv_sens_cancel"
SENS_CURVES_KEY = "sens_curves"
SENS_HEATMAP_KEY = "sens_heatmap"
SENS_KIND_KEY = "pv_sens_kind"
SENS_CAP_KEY = "pv_sens_cap"
SENS_COMPARE_KEY = "pv_sens_compare"
SENS_PROPOSE_KEY = "pv_sens_propose"
SENS_OWL_KEY = "sens_owl"  # the budget comparison's outlier-ratio chart (OWL)
FLOOR_VALUE_KEY = "pv_floor_value"  # the metric floor (accuracy in %)
FLOOR_METHOD_KEY = "pv_floor_method"
FLOOR_OBJECTIVE_KEY = "pv_floor_objective"
FLOOR_RUN_KEY = "pv_floor_run"
FLOOR_APPLY_KEY = "pv_floor_apply"
FLOOR_CHART_KEY = "floor_chart"
FLOOR_RESULT_KEY = "pv_floor_result"  # the last floor search: its inputs, result, experiment


def sens_value_key(kind: str) -> str:
    """The Sensitivity page's budget value for budget kind `kind` (a BudgetKind value)."""
    return f"pv_sens_value::{kind}"


# -- Fine-tune page --------------------------------------------------------------------------
FT_PREFIX = "pv_ft_"  # the page's controls: kept in FT_SAVED_KEY while other pages are shown
FT_SAVED_KEY = "pv_ft_saved"  # the controls' values, kept while other pages are shown
FT_FLASH_KEY = "pv_ft_flash"  # a message for the next run of the page
FT_BACK_KEY = "pv_ft_back"
FT_RECIPE_KEY = "pv_ft_recipe"
FT_FINAL_KEY = "pv_ft_final"
FT_ROUNDS_KEY = "pv_ft_rounds"
FT_PRUNE_UNTIL_KEY = "pv_ft_prune_until"
FT_INITIAL_KEY = "pv_ft_initial"
FT_AGP_KEY = "pv_ft_agp"
FT_POWER_KEY = "pv_ft_power"
FT_WINDOW_KEY = "pv_ft_window"
FT_FREQUENCY_KEY = "pv_ft_frequency"
FT_REG_KEY = "pv_ft_reg"
FT_STRENGTH_KEY = "pv_ft_strength"
FT_REG_UNTIL_KEY = "pv_ft_reg_until"
FT_GRAN_KEY = "pv_ft_gran"
FT_CRIT_KEY = "pv_ft_crit"
FT_SCOPE_KEY = "pv_ft_scope"
FT_CAP_KEY = "pv_ft_cap"
FT_EPOCHS_KEY = "pv_ft_epochs"
FT_LR_KEY = "pv_ft_lr"
FT_BATCH_KEY = "pv_ft_batch"
FT_SEED_KEY = "pv_ft_seed"
FT_PATIENCE_KEY = "pv_ft_patience"
FT_DISTILL_KEY = "pv_ft_distill"
FT_DISTILL_WEIGHT_KEY = "pv_ft_distill_weight"
FT_TEMPERATURE_KEY = "pv_ft_temperature"
FT_MAX_STEPS_KEY = "pv_ft_max_steps"
FT_RUN_KEY = "pv_ft_run"
FT_CANCEL_KEY = "pv_ft_cancel"
FT_USE_KEY = "pv_ft_use"
FT_HIST_LAYER_KEY = "pv_ft_hist_layer"
FT_HIST_LOG_KEY = "pv_ft_hist_log"
FT_SCHEDULE_CHART_KEY = "ft_schedule"
FT_CURVES_KEY = "ft_curves"
FT_HIST_BEFORE_KEY = "ft_hist_before"
FT_HIST_AFTER_KEY = "ft_hist_after"
# Buttons and messages: not controls whose values are kept between visits.
FT_NOT_SAVED = frozenset({FT_SAVED_KEY, FT_FLASH_KEY, FT_RUN_KEY, FT_CANCEL_KEY, FT_USE_KEY,
                          FT_BACK_KEY})

# -- Deploy page -----------------------------------------------------------------------------
FORMS_CACHE_KEY = "pv_forms_cache"
DEPLOY_SLIM_DOWNLOAD_KEY = "pv_dl_slim"
DEPLOY_CARD_DOWNLOAD_KEY = "pv_dl_card"

# -- Trade-offs page -------------------------------------------------------------------------
SWEEP_GRAN_KEY = "pv_sweep_gran"
SWEEP_CRIT_KEY = "pv_sweep_crit"
SWEEP_KEY = "pv_sweep"
SWEEP_CANCEL_KEY = "pv_sweep_cancel"
INT8_FORM_KEY = "pv_int8_form"
INT8_ON_KEY = "pv_int8_on"
INT8_GO_KEY = "pv_int8_go"
SVD_FORM_KEY = "pv_svd_form"
SVD_RANK_KEY = "pv_svd_rank"
SVD_ON_KEY = "pv_svd_on"
SVD_GO_KEY = "pv_svd_go"
INT8_STATIC_FORM_KEY = "pv_int8_static_form"
INT8_STATIC_ON_KEY = "pv_int8_static_on"
INT8_STATIC_GO_KEY = "pv_int8_static_go"
INT4_FORM_KEY = "pv_int4_form"
INT4_GROUP_KEY = "pv_int4_group"
INT4_ON_KEY = "pv_int4_on"
INT4_GO_KEY = "pv_int4_go"
FORMS_ALL_KEY = "pv_forms_all"
BEST_FORMS_TABLE_KEY = "tradeoff_best_forms"
TRADEOFF_CHOICE_KEY = "pv_tradeoff_choice"
HISTORY_TREE_KEY = "tradeoff_history"
RESTORE_KEY = "pv_restore"


def tradeoff_chart_key(field: str) -> str:
    """The Trade-offs page's scatter of the metric against experiment field `field`."""
    return f"tradeoff_{field}"


# -- Export page -----------------------------------------------------------------------------
EXPORT_KEY = "pv_export"  # (what was exported, ExportDownload) of this tab's last export
EXPORT_FOLDER_KEY = "pv_export_folder"
EXPORT_RUN_KEY = "pv_export_run"
EXPORT_REPLACE_KEY = "pv_export_replace"  # replace the complete export in the named folder
EXPORT_ZIP_KEY = "pv_export_dl_zip"


def export_download_key(name: str) -> str:
    """The Export page's download button of file `name`."""
    return f"pv_export_dl_{name}"

# -- Prune page: reconstruction (refit the kept weights) --------------------------------------
REFIT_SWITCH_KEY = "pv_refit_switch"  # "Refit the kept weights (reconstruction)"
REFIT_RUNS_KEY = "pv_refit_runs"  # {(plan key, weights): RefitRun} computed in this tab
REFIT_WANTED_KEY = "pv_refit_wanted"  # the switch was just turned on: refit the plan now
REFIT_GO_KEY = "pv_refit_go"  # "Refit this plan"
REFIT_USE_KEY = "pv_refit_use"  # "Use the refit weights in this tab"
REFIT_DROP_KEY = "pv_refit_drop"  # "Drop them"
REFIT_BACK_KEY = "pv_refit_back"  # "Back to the original weights"
REFIT_FLASH_KEY = "pv_refit_flash"  # a message for the next run of the page
# Trade-offs page: one plan one-shot, refit and fine-tuned side by side
RECOVERY_SHOW_KEY = "pv_recovery_show"
RECOVERY_PLAN_KEY = "pv_recovery_plan"
RECOVERY_CHART_KEY = "tradeoff_recovery"
