/** A job's `config` for the simulated runner: `steps` steps of `step_ms` each, and `extra` knobs (`fail_at_step`, `input_at_step`). */
export const simulate = (steps: number, step_ms: number, extra: Record<string, number> = {}) => ({ simulate: { steps, step_ms, ...extra } });
