"""Topic vocabularies and pin descriptions of the built-in world.

Each topic has its own words; a pin's short text mixes words of its topic, generic words
shared by every topic and a few words of another topic, so text predicts the topic well
but not perfectly (see ``docs/world.md``).
"""

from __future__ import annotations

import numpy as np

#: The built-in topics and their words (the first ``n_topics`` are used).
TOPIC_WORDS: dict[str, tuple[str, ...]] = {
    "home_decor": ("sofa", "rug", "bookshelf", "interior", "lamp", "boho", "minimalist",
                   "cushion", "curtains", "livingroom", "bedroom", "decor"),
    "recipes": ("dinner", "pasta", "chicken", "soup", "salad", "garlic", "weeknight",
                "skillet", "curry", "noodles", "sauce", "recipe"),
    "baking": ("cake", "cookies", "bread", "sourdough", "frosting", "cupcake", "pastry",
               "muffin", "dough", "pie", "brownies", "croissant"),
    "fashion": ("outfit", "dress", "denim", "jacket", "streetwear", "sneakers", "blouse",
                "boots", "skirt", "trench", "lookbook", "wardrobe"),
    "makeup": ("lipstick", "eyeliner", "makeup", "contour", "blush", "mascara", "eyeshadow",
               "foundation", "glam", "palette", "brows", "highlighter"),
    "hair": ("braids", "haircut", "curls", "bob", "balayage", "updo", "ponytail", "bangs",
             "blonde", "waves", "hairstyle", "layers"),
    "nails": ("manicure", "nails", "gel", "acrylics", "chrome", "polish", "glitter", "almond",
              "cuticle", "frenchtips", "nailart", "coffin"),
    "travel": ("beach", "itinerary", "backpacking", "island", "passport", "hostel", "roadtrip",
               "destination", "resort", "wanderlust", "europe", "lisbon"),
    "fitness": ("workout", "abs", "squats", "cardio", "gym", "pilates", "stretching",
                "dumbbell", "hiit", "plank", "glutes", "treadmill"),
    "gardening": ("garden", "succulents", "tomatoes", "compost", "seedlings", "raisedbed",
                  "perennials", "herbs", "pruning", "blooms", "planter", "greenhouse"),
    "diy": ("woodworking", "upcycle", "pallet", "drill", "plywood", "workbench", "sanding",
            "woodstain", "jigsaw", "hack", "toolbox", "renovation"),
    "crafts": ("crochet", "knitting", "yarn", "embroidery", "sewing", "quilt", "pattern",
               "macrame", "felt", "needle", "amigurumi", "stitch"),
    "weddings": ("wedding", "bride", "bouquet", "veil", "bridesmaid", "reception", "ceremony",
                 "engagement", "centerpiece", "gown", "vows", "venue"),
    "art": ("painting", "watercolor", "sketch", "canvas", "illustration", "portrait",
            "gouache", "charcoal", "mural", "abstract", "gallery", "sketchbook"),
    "photography": ("photography", "camera", "aperture", "goldenhour", "film", "lightroom",
                    "shutter", "tripod", "bokeh", "exposure", "preset", "composition"),
    "cars": ("car", "engine", "mustang", "restoration", "jdm", "turbo", "wheels", "garage",
             "drift", "supercar", "porsche", "horsepower"),
    "tattoos": ("tattoo", "fineline", "sleeve", "flash", "linework", "blackwork", "stencil",
                "forearm", "dotwork", "traditional", "sternum", "tattooideas"),
    "quotes": ("quotes", "motivation", "affirmations", "mindset", "lettering", "wisdom",
               "positivity", "journaling", "manifest", "selflove", "gratitude", "mantra"),
    "pets": ("puppy", "kitten", "dog", "cat", "goldenretriever", "corgi", "pet", "adoption",
             "grooming", "aquarium", "hamster", "leash"),
    "parenting": ("toddler", "nursery", "baby", "parenting", "montessori", "lunchbox",
                  "playroom", "newborn", "kids", "homeschool", "sensory", "bedtime"),
    "architecture": ("architecture", "facade", "modernist", "brutalist", "cabin",
                     "skyscraper", "villa", "concrete", "courtyard", "blueprint", "staircase",
                     "atrium"),
    "tech": ("desksetup", "keyboard", "gadgets", "laptop", "monitor", "coding", "smartphone",
             "mechanical", "ergonomic", "battlestation", "gaming", "headphones"),
    "outdoors": ("hiking", "camping", "trail", "mountains", "tent", "kayak", "nationalpark",
                 "summit", "campfire", "wilderness", "climbing", "waterfall"),
    "cocktails": ("cocktail", "margarita", "mocktail", "gin", "whiskey", "spritz", "bartender",
                  "mojito", "negroni", "garnish", "bourbon", "sangria"),
}

#: Words used by every topic ("ideas", "aesthetic", ...): they carry no topic signal.
GENERIC_WORDS: tuple[str, ...] = (
    "ideas", "inspo", "aesthetic", "easy", "best", "simple", "beautiful", "cute", "modern",
    "vintage", "tips", "guide", "trendy", "summer", "winter", "spring", "autumn", "budget",
    "small", "quick", "favorite", "cozy", "pretty", "creative", "unique", "colorful",
    "neutral", "pink", "black", "white", "green", "blue", "gold", "natural", "perfect",
    "daily", "weekend", "gift", "classic", "diy",
)

_SYLLABLES: tuple[str, ...] = ("ka", "lo", "mi", "ren", "sa", "tor", "vel", "xi", "bru",
                               "den", "fal", "gor", "hin", "jun", "pax", "quo", "ril", "zen")


def topic_vocabularies(n_topics: int) -> tuple[list[str], list[tuple[str, ...]]]:
    """Names and word lists of ``n_topics`` topics (built-in ones first, then made-up ones
    whose words are deterministic syllable strings)."""
    names = list(TOPIC_WORDS)[:n_topics]
    words = [TOPIC_WORDS[n] for n in names]
    for k in range(len(names), n_topics):
        names.append(f"topic_{k:03d}")
        words.append(tuple(f"{_SYLLABLES[(k + 3 * j) % len(_SYLLABLES)]}"
                           f"{_SYLLABLES[(7 * k + j) % len(_SYLLABLES)]}{k}w{j}"
                           for j in range(12)))
    return names, words


def make_texts(topics: np.ndarray, n_topics: int, rng: np.random.Generator, *,
               topic_share: float, other_share: float, mean_words: float) -> list[str]:
    """One short description per item of the given topic indices.

    Each text has ``1 + Poisson(mean_words - 1)`` words; each word comes from the item's
    topic with probability ``topic_share``, from a random other topic with probability
    ``other_share``, otherwise from :data:`GENERIC_WORDS`.
    """
    _, vocab = topic_vocabularies(n_topics)
    n = topics.size
    lengths = 1 + rng.poisson(max(mean_words - 1.0, 0.0), n)
    total = int(lengths.sum())
    owner = np.repeat(np.arange(n), lengths)
    kind = rng.random(total)
    other = (topics[owner] + rng.integers(1, max(n_topics, 2), total)) % n_topics
    word_topic = np.where(kind < topic_share, topics[owner], other)
    pick = rng.integers(0, 1 << 30, total)
    generic = kind >= topic_share + other_share
    words: list[str] = []
    for t, g, p in zip(word_topic.tolist(), generic.tolist(), pick.tolist(), strict=True):
        if g:
            words.append(GENERIC_WORDS[p % len(GENERIC_WORDS)])
        else:
            words.append(vocab[t][p % len(vocab[t])])
    ends = np.cumsum(lengths).tolist()
    out: list[str] = []
    start = 0
    for end in ends:
        out.append(" ".join(words[start:end]))
        start = end
    return out
