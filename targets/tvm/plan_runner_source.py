"""The native plan runner's C++ (appended to every hand-written kernel set's prelude,
``x86_kernel_ffi.ffi_prelude``; weak symbols, so one copy per library): a recorded sequence
of packed calls replayed in one packed call, as TVM's AOT executor runs a model — what
``plan_runner.Plan`` builds from one run of the Relax VM's ``main``.

- ``edgecc_plan_new()`` -> a plan handle (an int);
- ``edgecc_plan_step(plan, func, nbind, pos_0, slot_0, ..., args...)`` appends a call of
  ``func`` on ``args`` (held: object arguments are referenced until the plan is freed); each
  ``(pos, slot)`` pair marks argument ``pos`` as the run's argument ``slot`` (an input or an
  output tensor of ``edgecc_plan_run``), replaced on every run;
- ``edgecc_plan_run(plan, slot_0, slot_1, ...)`` makes the calls in order (the first error
  is returned, the callee having set it) and adds one to ``edgecc_plan_runs``;
- ``edgecc_plan_free(plan)`` releases what the plan holds.

Arguments that borrow memory the plan cannot hold (raw strings, byte arrays, opaque or
``DLTensor`` pointers) are refused when the step is added, as more than ``EDGECC_PLAN_MAX_ARGS``.
"""

from __future__ import annotations

PLAN_RUNNER_SOURCE = r"""
// ---- the native plan runner (targets/tvm/plan_runner_source.py) ----
extern "C" {
#define EDGECC_PLAN_MAX_ARGS 64  // (x86_int8_block's calls with the split form: 58-61)
struct EdgeccPlanStep {
  TVMFFIObjectHandle func;
  int32_t nargs, nbind;
  TVMFFIAny args[EDGECC_PLAN_MAX_ARGS];
  int32_t bind[2 * EDGECC_PLAN_MAX_ARGS];  // (argument position, run slot) pairs
};
struct EdgeccPlan { int32_t nsteps, cap; EdgeccPlanStep* steps; };
// plans run in this process (all libraries' counters are their own): tests check the path ran
__attribute__((weak)) int64_t edgecc_plan_runs = 0;
// edgecc_plan_trace 1: each run's steps log the TSC before and after their call in
// edgecc_plan_trace_log (step s at [2 s], [2 s + 1]; the first 1024 steps) for
// bench/x86_int8_call_overhead.py: the time between a run's calls; 0 (default): none
__attribute__((weak)) int64_t edgecc_plan_trace = 0;
__attribute__((weak)) int64_t edgecc_plan_trace_log[2 * 1024] = {};

__attribute__((weak)) int __tvm_ffi_edgecc_plan_new(void*, const TVMFFIAny*, int32_t,
                                                    TVMFFIAny* result) {
  EdgeccPlan* plan = static_cast<EdgeccPlan*>(calloc(1, sizeof(EdgeccPlan)));
  result->type_index = kTVMFFIInt;
  result->v_int64 = reinterpret_cast<intptr_t>(plan);
  return 0;
}

__attribute__((weak)) int __tvm_ffi_edgecc_plan_free(void*, const TVMFFIAny* args, int32_t,
                                                     TVMFFIAny*) {
  EdgeccPlan* plan = reinterpret_cast<EdgeccPlan*>(static_cast<intptr_t>(args[0].v_int64));
  if (plan == nullptr) return 0;
  for (int32_t s = 0; s < plan->nsteps; ++s) {
    EdgeccPlanStep& step = plan->steps[s];
    TVMFFIObjectDecRef(step.func);
    for (int32_t i = 0; i < step.nargs; ++i)
      if (step.args[i].type_index >= kTVMFFIStaticObjectBegin)
        TVMFFIObjectDecRef(step.args[i].v_obj);
  }
  free(plan->steps);
  free(plan);
  return 0;
}

__attribute__((weak)) int __tvm_ffi_edgecc_plan_step(void*, const TVMFFIAny* args,
                                                     int32_t num_args, TVMFFIAny*) {
  EdgeccPlan* plan = reinterpret_cast<EdgeccPlan*>(static_cast<intptr_t>(args[0].v_int64));
  if (num_args < 3 || args[1].type_index != kTVMFFIFunction) {
    TVMFFIErrorSetRaisedFromCStr("ValueError", "edgecc_plan_step(plan, func, nbind, ...)");
    return -1;
  }
  const int32_t nbind = static_cast<int32_t>(args[2].v_int64);
  const int32_t first = 3 + 2 * nbind, nargs = num_args - first;
  if (nbind < 0 || nargs < 0 || nargs > EDGECC_PLAN_MAX_ARGS) {
    TVMFFIErrorSetRaisedFromCStr("ValueError", "edgecc_plan_step: too many arguments");
    return -1;
  }
  for (int32_t i = 0; i < nargs; ++i) {
    const int32_t t = args[first + i].type_index;
    if (t == kTVMFFIRawStr || t == kTVMFFIByteArrayPtr || t == kTVMFFIOpaquePtr ||
        t == kTVMFFIDLTensorPtr || t == kTVMFFIObjectRValueRef) {
      TVMFFIErrorSetRaisedFromCStr("ValueError", "edgecc_plan_step: a borrowed argument");
      return -1;
    }
  }
  if (plan->nsteps == plan->cap) {
    const int32_t cap = plan->cap ? 2 * plan->cap : 64;
    void* grown = realloc(plan->steps, sizeof(EdgeccPlanStep) * cap);
    if (grown == nullptr) {
      TVMFFIErrorSetRaisedFromCStr("MemoryError", "edgecc_plan_step");
      return -1;
    }
    plan->steps = static_cast<EdgeccPlanStep*>(grown);
    plan->cap = cap;
  }
  EdgeccPlanStep& step = plan->steps[plan->nsteps++];
  step.func = args[1].v_obj;
  TVMFFIObjectIncRef(step.func);
  step.nargs = nargs;
  step.nbind = nbind;
  for (int32_t b = 0; b < 2 * nbind; ++b) step.bind[b] = static_cast<int32_t>(args[3 + b].v_int64);
  for (int32_t i = 0; i < nargs; ++i) {
    step.args[i] = args[first + i];
    if (step.args[i].type_index >= kTVMFFIStaticObjectBegin) TVMFFIObjectIncRef(step.args[i].v_obj);
  }
  return 0;
}

__attribute__((weak)) int __tvm_ffi_edgecc_plan_run(void*, const TVMFFIAny* args,
                                                    int32_t num_args, TVMFFIAny*) {
  const EdgeccPlan* plan =
      reinterpret_cast<const EdgeccPlan*>(static_cast<intptr_t>(args[0].v_int64));
  TVMFFIAny call[EDGECC_PLAN_MAX_ARGS];
  for (int32_t s = 0; s < plan->nsteps; ++s) {
    const EdgeccPlanStep& step = plan->steps[s];
    __builtin_memcpy(call, step.args, sizeof(TVMFFIAny) * step.nargs);
    for (int32_t b = 0; b < step.nbind; ++b) {
      const int32_t slot = 1 + step.bind[2 * b + 1];
      if (slot >= num_args) {
        TVMFFIErrorSetRaisedFromCStr("ValueError", "edgecc_plan_run: too few arguments");
        return -1;
      }
      call[step.bind[2 * b]] = args[slot];
    }
    TVMFFIAny ret;
    ret.type_index = kTVMFFINone;
    ret.zero_padding = 0;
    ret.v_int64 = 0;
    const bool trace = __builtin_expect(edgecc_plan_trace != 0, 0) && s < 1024;
    if (trace) edgecc_plan_trace_log[2 * s] = (int64_t)__rdtsc();
    const int rc = TVMFFIFunctionCall(step.func, call, step.nargs, &ret);
    if (trace) edgecc_plan_trace_log[2 * s + 1] = (int64_t)__rdtsc();
    if (rc != 0) return rc;
    if (ret.type_index >= kTVMFFIStaticObjectBegin) TVMFFIObjectDecRef(ret.v_obj);
  }
  __atomic_add_fetch(&edgecc_plan_runs, 1, __ATOMIC_RELAXED);
  return 0;
}
}  // extern "C"
"""
