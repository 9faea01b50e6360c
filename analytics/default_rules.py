"""The default rule set: what a new deployment escalates on, in severity tiers.

Judged on the labelled twitter-care corpus (`analytics/quality.py`, figures in
`docs/rules.md`); change it there and the quality test shows what moved.
"""

from __future__ import annotations

from analytics.rules import (
    AgentConductRule,
    HumanRequestedRule,
    KeywordRule,
    ResponseTimeRule,
    RuleSet,
    Scope,
    SentimentDropRule,
    SentimentRule,
    SignalRule,
)

DEFAULT_RULES = RuleSet(rules=[
    # -- high: a supervisor should look now --------------------------------------------
    SignalRule(id="churn-or-legal-threat", name="Leaving, or threatens to sue or go public",
               any_of=["churn", "threat"], severity="high"),
    SignalRule(id="insult", name="Insults the company or its staff",
               any_of=["insult"], sentiment_below=0.5, severity="high"),
    SignalRule(id="contempt-and-fed-up", name="Contempt, and fed up or let down again",
               all_of=["contempt"], any_of=["exasperation", "repeated_contact", "profanity"],
               sentiment_below=0.5, severity="high"),
    SignalRule(id="angry-and-shouting", name="Shouting and fed up, insulting or swearing",
               all_of=["intensity"],
               any_of=["exasperation", "repeated_contact", "insult", "contempt", "profanity"],
               severity="high"),
    SignalRule(id="angry-cancellation", name="Asks to cancel, in anger",
               any_of=["cancellation"], sentiment_below=-0.5, severity="high"),
    SentimentRule(id="negative-sentiment", name="Sustained negative sentiment",
                  metric="window", below=-0.5, consecutive=2, clear_above=-0.1,
                  severity="high"),
    # -- medium: worth a look -------------------------------------------------------------
    SignalRule(id="exasperation", name="Fed up, stuck, or let down again and again",
               any_of=["repeated_contact", "exasperation"], sentiment_below=0.75,
               severity="medium"),
    SignalRule(id="contempt", name="Contempt for the product or the service",
               any_of=["contempt"], severity="medium"),
    SignalRule(id="profanity", name="Swears, and not in delight",
               any_of=["profanity"], sentiment_below=0.5, severity="medium"),
    SignalRule(id="shouting", name="Shouting in a negative turn",
               all_of=["intensity"], sentiment_below=0.0, severity="medium"),
    SentimentRule(id="very-negative-turn", name="One very negative customer turn",
                  metric="turn", below=-0.75, consecutive=1, clear_above=-0.25,
                  severity="medium"),
    SentimentDropRule(id="sentiment-drop", name="Customer sentiment fell sharply",
                      metric="turn", drop=1.0, reference="peak", min_turns=2,
                      severity="medium"),
    KeywordRule(id="escalation-phrases", name="Asks for a manager or complains",
                phrases=["supervisor", "your manager", "a manager", "complaint", "escalate"],
                negation_aware=True, severity="medium"),
    AgentConductRule(id="agent-conduct", name="Agent swears or turns hostile",
                     below=-0.6, severity="medium"),
    # -- low: operational -----------------------------------------------------------------
    ResponseTimeRule(id="slow-response", name="Customer waiting for an answer",
                     seconds=120, scope=Scope(channels=["chat"]), severity="low"),
    HumanRequestedRule(id="human-requested", name="Bot conversation needs a person",
                       severity="low"),
])
