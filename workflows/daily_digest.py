"""A daily digest: collect the day's items, let them settle, wait for a person's approval,
have the agent summarise them, and hand the summary to the `notify` workflow.

Every `ctx` call is durable: if the server restarts during the cool-down or while waiting
for the approval, the run resumes where it was, and the collected items are not collected
again.
"""

import datetime

WORKFLOW_NAME = "daily_digest"
SCHEDULE = {
    "cron": "0 9 * * 1-5",
    "timezone": "Europe/Berlin",
    "input": {"items": ["(scheduled: the items come from your own collector)"]},
}


def collect_digest_data(inp):
    """The day and its items (a real digest would call an API here, through the workflow
    worker's gateway)."""
    items = [str(i) for i in inp.get("items", [])]
    return {"day": datetime.date.today().isoformat(), "items": items}


async def handler(inp, ctx):
    data = await ctx.step("collect", lambda: collect_digest_data(inp))
    ctx.log(f"collected {len(data['items'])} items for {data['day']}")
    await ctx.sleep("cool_down", seconds=inp.get("cool_down", 60))
    approval = await ctx.wait_for_event("approval", correlation_id=data["day"], timeout=24 * 3600)
    bullet_list = "\n".join(f"- {i}" for i in data["items"])
    summary = await ctx.run_agent("summarize", text=f"Summarize this for the team:\n{bullet_list}")
    child = await ctx.start_workflow("notify", {"summary": summary, "day": data["day"]})
    return {"day": data["day"], "approval": approval, "summary": summary, "notified": await ctx.wait_for_workflow(child)}
