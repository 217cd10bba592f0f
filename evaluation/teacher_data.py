"""Teacher data for the demo parent: varied prompts, and pirate-voiced answers built
from the original model's own answers.

Why not the original model with a persona system prompt, as before: a 135M model follows
a system prompt loosely. Its persona answers drifted off the question ("Tell me about
bees." → "Arr! The capital of France is Paris.") or looped, and the student learned
exactly that. Here the teacher's *content* is the original model's plain answer (greedy,
repetition penalty, cut to whole sentences, kept only when it is on topic, loop-free and
clean), and only the *voice* is added, by rule: an opening, a few word swaps, a closing.
The student then learns the voice while its knowledge stays the original's.
"""

from __future__ import annotations

import random
import re

from evaluation.prompt_set import PromptCase

# (phrase, topic word start). Subjects differ from the demo prompt set's, so its
# held-out half measures what the student generalizes, not what it memorized.
SUBJECTS = (
    ("the sun", "sun"), ("rain", "rain"), ("snow", "snow"), ("forests", "forest"), ("mountains", "mountain"),
    ("rivers", "river"), ("deserts", "desert"), ("elephants", "elephant"), ("dolphins", "dolphin"), ("horses", "horse"),
    ("owls", "owl"), ("sharks", "shark"), ("penguins", "penguin"), ("lions", "lion"), ("butterflies", "butterfl"),
    ("apples", "apple"), ("bread", "bread"), ("cheese", "cheese"), ("coffee", "coffee"), ("chocolate", "chocolate"),
    ("pizza", "pizza"), ("music", "music"), ("painting", "paint"), ("soccer", "soccer"), ("chess", "chess"),
    ("swimming", "swim"), ("the piano", "piano"), ("trains", "train"), ("airplanes", "airplane"), ("ships", "ship"),
    ("the internet", "internet"), ("robots", "robot"), ("stars", "star"), ("Mars", "mars"), ("the Earth", "earth"),
    ("gold", "gold"), ("salt", "salt"), ("friendship", "friend"), ("libraries", "librar"), ("gardens", "garden"),
    ("summer", "summer"), ("winter", "winter"), ("history", "histor"), ("mathematics", "math"), ("maps", "map"),
    ("clocks", "clock"), ("kites", "kite"), ("candles", "candle"), ("dinosaurs", "dinosaur"), ("islands", "island"),
    ("the wind", "wind"), ("bridges", "bridge"), ("tigers", "tiger"), ("rice", "rice"), ("honey", "honey"),
)
QUESTION_TEMPLATES = ("What do you know about {s}?", "Tell me about {s}.", "Why do people care about {s}?", "Explain {s} simply.",
                      "Give me a fun fact about {s}.", "Describe {s} in two sentences.", "Write a short poem about {s}.",
                      "What do people love about {s}?")
TASKS = (
    ("plant a tree", "tree"), ("learn to swim", "swim"), ("make pancakes", "pancake"), ("wash my car", "car"),
    ("write a thank-you letter", "letter"), ("start a vegetable garden", "garden"), ("clean my room", "room"),
    ("learn a new language", "language"), ("make a paper airplane", "paper"), ("bake bread", "bread"),
    ("stay focused when studying", "stud"), ("make new friends", "friend"), ("cook rice", "rice"),
    ("take care of a cat", "cat"), ("keep a plant alive", "plant"), ("get better at drawing", "draw"),
)
TASK_TEMPLATES = ("How do I {s}?", "Give me two tips to {s}.", "What is the first step to {s}?")
OPENINGS = ("Arr, matey!", "Ahoy, matey!", "Arr!", "Aye, matey!", "Ahoy there!")
CLOSINGS = ("Yo ho ho!", "Arr!", "Fair winds to ye!", "", "")
# Word swaps into pirate speech, applied on whole words (case kept for the first letter).
SWAPS = {"you": "ye", "your": "yer", "yours": "yers", "my": "me", "hello": "ahoy", "hi": "ahoy", "yes": "aye",
         "friend": "matey", "friends": "mateys", "you're": "ye be", "you are": "ye be", "is not": "be not"}


def training_cases(seed: int = 0) -> list[PromptCase]:
    """About 130 varied single- and multi-turn cases with their topic words."""
    rng = random.Random(seed)
    cases = []
    for phrase, stem in SUBJECTS:
        for template in rng.sample(QUESTION_TEMPLATES, 2):
            cases.append(PromptCase(({"role": "user", "content": template.format(s=phrase)},), (stem,)))
    for phrase, stem in SUBJECTS[::4]:
        cases.append(PromptCase(({"role": "user", "content": f"I have been thinking about {phrase} lately."},
                                 {"role": "assistant", "content": f"That sounds interesting! What would you like to know about {phrase}?"},
                                 {"role": "user", "content": "Tell me something surprising about it."}), (stem,)))
    for phrase, stem in TASKS:
        cases.append(PromptCase(({"role": "user", "content": rng.choice(TASK_TEMPLATES).format(s=phrase)},), (stem,)))
    rng.shuffle(cases)
    return cases


def whole_sentences(text: str, max_sentences: int = 3) -> str:
    """The answer cut after its last complete sentence (at most `max_sentences`), so the
    student learns to end a reply rather than trail off at the token budget."""
    sentences = re.findall(r".*?[.!?](?=\s|$)", " ".join(text.split()))
    return " ".join(s.strip() for s in sentences[:max_sentences])


def pirate_voice(answer: str, rng: random.Random) -> str:
    def swap(match: re.Match) -> str:
        word = match.group(0)
        new = SWAPS[word.lower()]
        return new[0].upper() + new[1:] if word[0].isupper() else new

    pattern = r"\b(" + "|".join(re.escape(k) for k in sorted(SWAPS, key=len, reverse=True)) + r")\b"
    body = re.sub(pattern, swap, answer, flags=re.IGNORECASE)
    return " ".join(filter(None, [rng.choice(OPENINGS), body, rng.choice(CLOSINGS)]))
