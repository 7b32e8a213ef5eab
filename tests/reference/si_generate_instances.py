# Lines from yizhongw/self-instruct (Apache-2.0), self_instruct/generate_instances.py @ bcc81cd86765a7c11224809ffda727de289a6454,
# for parity tests only. The script has no functions: the marked lines of its __main__ block are wrapped, unchanged,
# in functions a test can call.
from si_templates import output_first_template_for_clf, input_first_template_for_gen


def reference_prompts(batch, task_clf_types):
    # ---- from __main__, unchanged ----
                prompts = []
                for task in batch:
                    if task_clf_types[task["instruction"]]:
                        prompt = output_first_template_for_clf + " " + task["instruction"].strip() + "\n"
                        prompts.append(prompt)
                    else:
                        prompt = input_first_template_for_gen + " " + task["instruction"].strip() + "\n"
                        prompts.append(prompt)
    # ----
                return prompts


def reference_request_params(args, batch, task_clf_types):
    # ---- the decoding arguments of the make_gpt3_requests call in __main__, unchanged ----
    return dict(
                    # because the clf template is longer, we need to decrease the max_tokens
                    max_tokens=300 if any(task_clf_types[task["instruction"]] for task in batch) else 350,
                    temperature=0,
                    top_p=0,
                    frequency_penalty=0,
                    presence_penalty=1.5,
                    stop_sequences=[f"Example {args.max_instances_to_generate + 1}", "Task:"],
                    logprobs=1,
                    n=1,
                    best_of=1,
    )
