"""Word list of the offline tiny tokenizer.

The tiny model is random, so what it "says" is a random walk over its vocabulary. A vocabulary made
of caption words and the COCO object names (with common synonyms and plurals) makes those random
captions contain object mentions, so CHAIR/POPE/OPOPE code paths see realistic inputs.
"""

from __future__ import annotations

# The 80 COCO category names, in COCO's order.
COCO_CATEGORIES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

# Common surface forms of those objects in captions (plurals and everyday synonyms).
OBJECT_SURFACE_WORDS: tuple[str, ...] = (
    "people", "man", "men", "woman", "women", "boy", "girl", "child", "children", "kid", "kids",
    "player", "bike", "bikes", "cars", "motorbike", "plane", "jet", "buses", "trucks", "boats",
    "ship", "hydrant", "birds", "cats", "kitten", "dogs", "puppy", "horses", "pony", "lamb",
    "cows", "cattle", "elephants", "bears", "zebras", "giraffes", "umbrellas", "bag", "purse",
    "ball", "kites", "bat", "glove", "racket", "bottles", "glass", "cups", "mug", "forks",
    "knives", "spoons", "bowls", "bananas", "apples", "sandwiches", "oranges", "carrots",
    "pizzas", "donuts", "doughnut", "cakes", "chairs", "sofa", "plant", "plants", "beds",
    "table", "tables", "toilets", "television", "laptops", "computer", "phone", "fridge",
    "books", "clocks", "vases", "flowers",
)

# Words that make random captions read like captions.
CAPTION_WORDS: tuple[str, ...] = (
    "a", "an", "the", "of", "in", "on", "with", "and", "is", "are", "there", "image", "picture",
    "photo", "shows", "sitting", "standing", "next", "to", "near", "front", "behind", "two",
    "three", "several", "large", "small", "white", "black", "red", "blue", "green", "street",
    "room", "field", "water", "grass", "road", "wall", "background", "top", "side", "holding",
    "scene", "describe", "this", "detail", "please", "yes", "no", "answer", "question", "using",
    "single", "word", "or", "phrase", "one", "what", "it", "its", "his", "her", "their",
    ".", ",", "?", ":", "!",
)

# Words of the prompt templates (methods.md §1.3) so prompts tokenise without <unk>.
TEMPLATE_WORDS: tuple[str, ...] = (
    "USER", "ASSISTANT", "A", "chat", "between", "curious", "user", "human", "artificial",
    "intelligence", "assistant", "The", "gives", "helpful", "detailed", "polite", "answers",
    "to", "user's", "human's", "questions", "Please", "Is", "Answer", "this", "describe",
    "'", "s",
)


def vocabulary() -> list[str]:
    """Deduplicated word list in a fixed order (the order fixes the token ids)."""
    words: list[str] = []
    for name in COCO_CATEGORIES:
        words.extend(name.split())
    words.extend(OBJECT_SURFACE_WORDS)
    words.extend(CAPTION_WORDS)
    words.extend(TEMPLATE_WORDS)
    seen: set[str] = set()
    ordered: list[str] = []
    for w in words:
        if w not in seen:
            seen.add(w)
            ordered.append(w)
    return ordered
