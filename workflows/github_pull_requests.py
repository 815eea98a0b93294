"""A GitHub webhook: every pull request that is opened gets a first look from the agent.

Point the repository's webhook at `https://<server>/api/webhooks/github-pull-requests`
(content type application/json, events: pull requests) with a secret, and give the server
that secret as GITHUB_WEBHOOK_SECRET in `workflows.secrets_from`. GitHub's delivery id is
the trigger key: a redelivered event starts no second run.
"""

WORKFLOW_NAME = "github_pull_requests"
WEBHOOKS = [
    {
        "slug": "github-pull-requests",
        "auth": {"type": "github", "secret": "GITHUB_WEBHOOK_SECRET"},
        "trigger_key": {"header": "X-GitHub-Delivery"},
    }
]


async def handler(inp, ctx):
    hook = inp["webhook"]
    event = hook["headers"].get("x-github-event")
    body = hook["body"]
    if event != "pull_request" or body.get("action") != "opened":
        return {"ignored": f"{event} {body.get('action')}"}
    pr = body["pull_request"]
    review = await ctx.run_agent(
        "first_look",
        text=f"Take a first look at pull request #{pr['number']} ({pr['title']}): {pr['html_url']}",
        thread_key=f"github:{body['repository']['full_name']}:{pr['number']}",
    )
    return {"pull_request": pr["number"], "first_look": review}
