"""A small, hand-written set of customer messages with intents, owned by the tests.

Varied wording on purpose (no shared keywords inside an intent), so that a probe trained on
half of it measures embedding quality rather than keyword matching.
"""

from __future__ import annotations

MESSAGES: dict[str, list[str]] = {
    "card_arrival": [
        "My new card still hasn't shown up in the mail.",
        "It's been two weeks, where is the debit card you sent me?",
        "How long does delivery of a replacement card usually take?",
        "The plastic card I ordered never arrived at my address.",
        "Can you track the card you posted to me last Monday?",
        "I'm still waiting for my card, is something wrong with the shipment?",
        "When should I expect my bank card to be delivered?",
        "Nothing has come through my letterbox yet, the card seems lost.",
    ],
    "refund": [
        "I returned the shoes, when do I get my money back?",
        "Please reimburse the amount you charged me twice.",
        "How do I ask for a refund on a cancelled order?",
        "The shop agreed to pay me back but nothing reached my account.",
        "I want the payment for the broken item returned to me.",
        "Can you reverse the charge for the subscription I cancelled?",
        "My reimbursement is taking ages, what is the status?",
        "Give me back what I paid for the ticket that was called off.",
    ],
    "pin_reset": [
        "I forgot the PIN for my card.",
        "My code got blocked after three wrong tries.",
        "How can I change the secret number for the ATM?",
        "Help, I can't remember the four digits to withdraw cash.",
        "Unlock my card, I typed the wrong PIN too many times.",
        "Where do I set a new PIN in the app?",
        "The cash machine says my PIN is incorrect.",
        "I need to reset the number I use at the checkout terminal.",
    ],
    "exchange_rate": [
        "What rate do you use to convert euros to dollars?",
        "Why did I get so few yen for my pounds?",
        "Is there a fee when I pay in a foreign currency?",
        "How much is one Swiss franc worth in your app today?",
        "The conversion on my holiday purchase looks wrong.",
        "Do you apply the interbank rate on weekends?",
        "Which exchange rate was used for my payment in Mexico?",
        "I was charged more than the official currency price abroad.",
    ],
    "account_closure": [
        "Please close my account, I don't need it anymore.",
        "How do I delete my profile and all my data?",
        "I'd like to cancel my membership with you for good.",
        "What happens to my balance if I shut the account down?",
        "I'm moving to another bank and want to terminate this one.",
        "Remove my account permanently, thanks.",
        "Can I deactivate everything from the app?",
        "Stop all services on my name and close it.",
    ],
    "top_up": [
        "How do I add money to my account?",
        "My transfer to load funds hasn't appeared.",
        "Can I put cash in with a cheque?",
        "The top-up from my other bank failed.",
        "Is there a limit to how much I can deposit at once?",
        "Why is my balance the same after I loaded twenty pounds?",
        "Which cards can I use to fund my wallet?",
        "I sent money in by bank transfer yesterday, where is it?",
    ],
}


def split_halves() -> tuple[list[str], list[str], list[str], list[str]]:
    """(train texts, train labels, test texts, test labels): even and odd messages."""
    train_texts, train_labels, test_texts, test_labels = [], [], [], []
    for intent, messages in MESSAGES.items():
        for index, message in enumerate(messages):
            is_train = index % 2 == 0
            (train_texts if is_train else test_texts).append(message)
            (train_labels if is_train else test_labels).append(intent)
    return train_texts, train_labels, test_texts, test_labels
