// fixture_rewards.h — the parts of a reward module's fixture check that every reward fixture
// shares (fixture_rewards.c defines them; fixture_temporal.c uses them too). Inside rewards/.
#pragma once
#include "core/models/fixture_checks.h"
#include "reward.h"

// The module `name` built from the fixture's weights, every key of which must be used, with
// the json's "options" ({"key": "value" or number}) and "config"; r->segments = opt->segments.
// NULL + an error naming the fixture.
vt_reward *vt_fixture_reward_create(vt_fixture *fx, const vt_fixture_opts *opt, const char *name);

// Scores io "frames" with prompts (NULL for a module without text) on a tape, comparing on the
// way every intermediate the module reports through r->hook that the io has (token ids
// exactly), then reward, loss and, when the fixture asks for it, grad.frames = d loss / d frames.
vt_err vt_fixture_reward_run(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep, vt_reward *r,
                             const char *const *prompts);
