"""Every language the companion speaks, in one table.

A language is one setting: it reaches the vision prompt, speech recognition,
the synthesiser's voice and every fixed phrase the narrator says. A language
is offered only when its row here is complete (a test checks every phrase,
every hazard category, the side words, the clock pattern, the edge names and
the stop words); adding one is adding a row, never code.

The narrator reads hazard directions in any language of the table (the vision
model answers in the user's language): ``side_words`` and ``clock`` put "à
gauche", "rechts" or "3点钟方向" on a side, so the same obstacle on the other
side is news in every language, not only in English.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PHRASE_KEYS = (
    "unsure",
    "no_vision",
    "not_heard",
    "say_again",
    "heard",
    "too_long",
    "cannot_hear",
    "camera_off",
    "sign",
    "sign_unreadable",
    "metre",
    "metres",
    "sees_nothing_dark",
    "sees_nothing_featureless",
    "still_dark",
    "busy",
    "no_text",
    "no_reader",
    "reading_failed",
    "text_blurred",
    "text_partly_blurred",
    "text_cut_off",
    "reading",
    "reading_done",
    "nothing_to_continue",
    "more_follows",
    "settings_changed",
    "rate",
    "volume",
    "quiet_on",
    "quiet_off",
    "voice",
    "language",
    "verbosity:hazards-only",
    "verbosity:standard",
    "verbosity:detailed",
)
CATEGORIES = ("steps", "vehicles", "people", "doors", "surface")
EDGES = ("left", "right", "top", "bottom")
SIDES = ("left", "right")


@dataclass(frozen=True, kw_only=True)
class Language:
    """One row of the table.

    Attributes:
        code: The setting's value (BCP-47 primary tag).
        name: The language's name in itself, shown to caregivers.
        cjk: Written without spaces (word limits count characters).
        phrases: Every fixed thing the narrator says, by ``PHRASE_KEYS``.
        category_words: Words in hazard labels that put a hazard in a category.
        edges: How to name an edge text runs off, by ``EDGES``.
        side_words: Words in a hazard's direction that put it on a side, by
            ``SIDES`` (whole words, so "tout droit", straight ahead, is not
            "droite", right, and "linked" is not "linke"). No word: ahead.
        clock: A pattern for clock positions ("at 3 o'clock", "à 3 heures"); its
            first group is the hour, in digits or (Chinese) numerals.
        and_word: Joins the last two of a list ("left and bottom"); espeak-ng
            would read a slash as "slash".
        list_sep: Separates the others ("left, top and bottom").
        stop_words: Whole utterances that mean Stop (typed or spoken); they stop
            speech at once and never go to the vision model as a question.
        fillers: Words around a stop word that do not change it ("please").
    """

    code: str
    name: str
    cjk: bool = False
    phrases: dict[str, str] = field(default_factory=dict)
    category_words: dict[str, tuple[str, ...]] = field(default_factory=dict)
    edges: dict[str, str] = field(default_factory=dict)
    side_words: dict[str, tuple[str, ...]] = field(default_factory=dict)
    clock: str = ""
    and_word: str = ""
    list_sep: str = ", "
    stop_words: tuple[str, ...] = ()
    fillers: tuple[str, ...] = ()


LANGUAGES: dict[str, Language] = {
    "en": Language(
        code="en",
        name="English",
        phrases={
            "unsure": "I'm not sure.",
            "no_vision": "Vision is unavailable right now.",
            "not_heard": "Sorry, I didn't catch that.",
            "say_again": "Sorry, I'm not sure I heard that right. Please say it again.",
            "heard": "I heard: {text}.",
            "too_long": "That was long; I answered the first part.",
            "camera_off": "The camera is off or sends nothing. Turn it on, then ask again.",
            "cannot_hear": "Spoken questions in this language need another speech model; type your question instead.",
            "sign": "Sign: {text}",
            "sign_unreadable": "A sign I can't read.",
            "metre": "one metre",
            "metres": "{d} metres",
            "sees_nothing_dark": "The camera sees nothing: it may be covered or it is too dark.",
            "sees_nothing_featureless": "The camera sees only a plain surface.",
            "still_dark": "Still nothing to see.",
            "busy": "I'm busy; ask again in a moment.",
            "no_text": "I see no text.",
            "no_reader": "Text reading is unavailable right now.",
            "reading_failed": "I could not read the text this time. Try again.",
            "text_blurred": "There is text, but it is too blurred to read. Hold the phone still.",
            "text_partly_blurred": "Some text was too blurred to read.",
            "text_cut_off": "The text runs off the {edges}. Move the phone that way.",
            "reading": "Reading.",
            "reading_done": "That is all the text.",
            "nothing_to_continue": "There is nothing more to read.",
            "more_follows": "Say go on for more.",
            "settings_changed": "Your settings changed.",
            "rate": "Speech rate {value}.",
            "volume": "Volume {value} percent.",
            "quiet_on": "Quiet mode on: warnings and answers only.",
            "quiet_off": "Quiet mode off.",
            "voice": "New voice.",
            "language": "Language: {value}.",
            "verbosity:hazards-only": "Warnings only.",
            "verbosity:standard": "Warnings and signs.",
            "verbosity:detailed": "Warnings, signs and descriptions.",
        },
        category_words={
            "steps": ("step", "stair", "kerb", "curb", "drop", "ledge", "escalator"),
            "vehicles": (
                "car",
                "bike",
                "bicycle",
                "bus",
                "truck",
                "scooter",
                "vehicle",
                "motorbike",
                "tram",
                "van",
                "taxi",
            ),
            "people": ("person", "people", "man", "woman", "child", "pedestrian", "dog"),
            "doors": ("door", "gate"),
            "surface": ("wet", "puddle", "ice", "hole", "uneven", "crack", "grate"),
        },
        edges={"left": "left", "right": "right", "top": "top", "bottom": "bottom"},
        side_words={"left": ("left",), "right": ("right",)},
        clock=r"(\d{1,2})\s*o\W?\s*clock",
        and_word=" and ",
        stop_words=(
            "stop",
            "stop it",
            "stop talking",
            "stop reading",
            "stop that",
            "shut up",
            "be quiet",
            "quiet",
            "silence",
            "enough",
            "that's enough",
            "that s enough",
            "hush",
            "shh",
            "pause",
        ),
        fillers=("please", "ok", "okay", "now", "just", "oh", "hey", "seealoud"),
    ),
    "zh": Language(
        code="zh",
        name="中文",
        cjk=True,
        phrases={
            "unsure": "我不确定。",
            "no_vision": "现在无法使用视觉功能。",
            "not_heard": "抱歉，我没听清。",
            "say_again": "抱歉，我可能没听对，请再说一遍。",
            "heard": "我听到的是：{text}。",
            "too_long": "问题太长，我回答了前一部分。",
            "camera_off": "摄像头关着或没有画面。请打开摄像头再问。",
            "cannot_hear": "这个语言的语音提问需要另一个语音模型；请输入文字提问。",
            "sign": "标志：{text}",
            "sign_unreadable": "有一个我看不清的标志。",
            "metre": "一米",
            "metres": "{d}米",
            "sees_nothing_dark": "摄像头什么也看不到：可能被遮住了，或者太暗了。",
            "sees_nothing_featureless": "摄像头只看到一片平面。",
            "still_dark": "还是什么也看不到。",
            "busy": "我正在忙，请稍后再问。",
            "no_text": "我没有看到文字。",
            "no_reader": "现在无法读取文字。",
            "reading_failed": "这次没能读出文字。请再试一次。",
            "text_blurred": "有文字，但太模糊了，看不清。请拿稳手机。",
            "text_partly_blurred": "有些文字太模糊，没能读出来。",
            "text_cut_off": "文字超出了画面的{edges}。请把手机往那边移。",
            "reading": "正在读。",
            "reading_done": "文字就这些。",
            "nothing_to_continue": "没有更多可读的了。",
            "more_follows": "说“继续”听后面的。",
            "settings_changed": "你的设置已更改。",
            "rate": "语速{value}。",
            "volume": "音量百分之{value}。",
            "quiet_on": "安静模式已打开：只说警告和回答。",
            "quiet_off": "安静模式已关闭。",
            "voice": "新的声音。",
            "language": "语言：{value}。",
            "verbosity:hazards-only": "只说警告。",
            "verbosity:standard": "警告和标志。",
            "verbosity:detailed": "警告、标志和描述。",
        },
        category_words={
            "steps": ("台阶", "楼梯", "阶梯", "路缘", "扶梯"),
            "vehicles": ("车", "巴士", "公交", "电车"),
            "people": ("人", "行人", "孩子", "狗"),
            "doors": ("门",),
            "surface": ("湿", "水坑", "冰", "坑", "不平", "裂"),
        },
        edges={"left": "左边", "right": "右边", "top": "上边", "bottom": "下边"},
        side_words={"left": ("左",), "right": ("右",)},
        clock=r"([0-9]{1,2}|[一二两三四五六七八九十]{1,3})\s*点",
        and_word="和",
        list_sep="、",
        stop_words=("停", "停下", "停止", "停一下", "别说了", "不要说了", "安静", "闭嘴", "暂停"),
        fillers=("请", "吧", "啊", "呀", "好", "了", "你"),
    ),
    "fr": Language(
        code="fr",
        name="Français",
        phrases={
            "unsure": "Je ne suis pas sûr.",
            "no_vision": "La vision n'est pas disponible pour le moment.",
            "not_heard": "Désolé, je n'ai pas compris.",
            "say_again": "Désolé, je ne suis pas sûr d'avoir bien entendu. Répétez, s'il vous plaît.",
            "heard": "J'ai entendu : {text}.",
            "too_long": "C'était long ; j'ai répondu à la première partie.",
            "camera_off": "La caméra est éteinte ou n'envoie rien. Allumez-la, puis redemandez.",
            "cannot_hear": "Les questions parlées dans cette langue demandent un autre modèle vocal ; tapez votre question.",
            "sign": "Panneau : {text}",
            "sign_unreadable": "Un panneau que je ne peux pas lire.",
            "metre": "un mètre",
            "metres": "{d} mètres",
            "sees_nothing_dark": "La caméra ne voit rien : elle est peut-être couverte, ou il fait trop sombre.",
            "sees_nothing_featureless": "La caméra ne voit qu'une surface unie.",
            "still_dark": "Toujours rien à voir.",
            "busy": "Je suis occupé ; redemandez dans un instant.",
            "no_text": "Je ne vois pas de texte.",
            "no_reader": "La lecture de texte n'est pas disponible pour le moment.",
            "reading_failed": "Je n'ai pas pu lire le texte cette fois. Réessayez.",
            "text_blurred": "Il y a du texte, mais il est trop flou pour être lu. Tenez le téléphone immobile.",
            "text_partly_blurred": "Une partie du texte était trop floue pour être lue.",
            "text_cut_off": "Le texte dépasse du côté {edges}. Déplacez le téléphone de ce côté.",
            "reading": "Je lis.",
            "reading_done": "C'est tout le texte.",
            "nothing_to_continue": "Il n'y a rien de plus à lire.",
            "more_follows": "Dites « la suite » pour continuer.",
            "settings_changed": "Vos réglages ont changé.",
            "rate": "Débit de parole {value}.",
            "volume": "Volume {value} pour cent.",
            "quiet_on": "Mode silencieux activé : alertes et réponses seulement.",
            "quiet_off": "Mode silencieux désactivé.",
            "voice": "Nouvelle voix.",
            "language": "Langue : {value}.",
            "verbosity:hazards-only": "Alertes seulement.",
            "verbosity:standard": "Alertes et panneaux.",
            "verbosity:detailed": "Alertes, panneaux et descriptions.",
        },
        category_words={
            "steps": ("marche", "escalier", "trottoir", "bordure", "escalator"),
            "vehicles": ("voiture", "vélo", "bus", "camion", "scooter", "véhicule", "moto", "tram"),
            "people": ("personne", "gens", "homme", "femme", "enfant", "piéton", "chien"),
            "doors": ("porte", "portail"),
            "surface": ("mouillé", "flaque", "glace", "trou", "inégal", "fissure", "grille"),
        },
        edges={"left": "gauche", "right": "droit", "top": "haut", "bottom": "bas"},
        side_words={"left": ("gauche",), "right": ("droite",)},
        clock=r"(\d{1,2})\s*h(?:eures?)?(?!\w)",
        and_word=" et ",
        stop_words=(
            "stop",
            "arrête",
            "arrêtez",
            "arrête toi",
            "arrêtez vous",
            "tais toi",
            "taisez vous",
            "silence",
            "pause",
            "ça suffit",
            "assez",
        ),
        fillers=("s", "il", "te", "vous", "plaît", "plait", "ok", "d", "accord", "maintenant"),
    ),
    "de": Language(
        code="de",
        name="Deutsch",
        phrases={
            "unsure": "Ich bin nicht sicher.",
            "no_vision": "Die Bilderkennung ist gerade nicht verfügbar.",
            "not_heard": "Entschuldigung, das habe ich nicht verstanden.",
            "say_again": "Entschuldigung, ich habe das vielleicht falsch verstanden. Bitte noch einmal.",
            "heard": "Ich habe verstanden: {text}.",
            "too_long": "Das war lang; ich habe den ersten Teil beantwortet.",
            "camera_off": "Die Kamera ist aus oder sendet nichts. Schalten Sie sie ein und fragen Sie noch einmal.",
            "cannot_hear": "Gesprochene Fragen in dieser Sprache brauchen ein anderes Sprachmodell; bitte tippen Sie Ihre Frage.",
            "sign": "Schild: {text}",
            "sign_unreadable": "Ein Schild, das ich nicht lesen kann.",
            "metre": "ein Meter",
            "metres": "{d} Meter",
            "sees_nothing_dark": "Die Kamera sieht nichts: Sie ist vielleicht verdeckt, oder es ist zu dunkel.",
            "sees_nothing_featureless": "Die Kamera sieht nur eine glatte Fläche.",
            "still_dark": "Immer noch nichts zu sehen.",
            "busy": "Ich bin beschäftigt; frag gleich noch einmal.",
            "no_text": "Ich sehe keinen Text.",
            "no_reader": "Das Vorlesen von Text ist gerade nicht verfügbar.",
            "reading_failed": "Ich konnte den Text diesmal nicht lesen. Versuchen Sie es noch einmal.",
            "text_blurred": "Da ist Text, aber er ist zu unscharf zum Lesen. Halte das Telefon still.",
            "text_partly_blurred": "Ein Teil des Textes war zu unscharf zum Lesen.",
            "text_cut_off": "Der Text geht über den Rand: {edges}. Beweg das Telefon dorthin.",
            "reading": "Ich lese.",
            "reading_done": "Das ist der ganze Text.",
            "nothing_to_continue": "Es gibt nichts mehr zu lesen.",
            "more_follows": "Sagen Sie „weiter“ für mehr.",
            "settings_changed": "Deine Einstellungen wurden geändert.",
            "rate": "Sprechtempo {value}.",
            "volume": "Lautstärke {value} Prozent.",
            "quiet_on": "Ruhemodus an: nur Warnungen und Antworten.",
            "quiet_off": "Ruhemodus aus.",
            "voice": "Neue Stimme.",
            "language": "Sprache: {value}.",
            "verbosity:hazards-only": "Nur Warnungen.",
            "verbosity:standard": "Warnungen und Schilder.",
            "verbosity:detailed": "Warnungen, Schilder und Beschreibungen.",
        },
        category_words={
            "steps": ("stufe", "treppe", "bordstein", "kante", "rolltreppe"),
            "vehicles": ("auto", "fahrrad", "rad", "bus", "lkw", "roller", "fahrzeug", "bahn"),
            "people": ("person", "leute", "mann", "frau", "kind", "fußgänger", "hund"),
            "doors": ("tür", "tor"),
            "surface": ("nass", "pfütze", "eis", "loch", "uneben", "riss", "gitter"),
        },
        edges={"left": "links", "right": "rechts", "top": "oben", "bottom": "unten"},
        side_words={
            "left": ("links", "linke", "linken", "linker", "linkes"),
            "right": ("rechts", "rechte", "rechten", "rechter", "rechtes"),
        },
        clock=r"(\d{1,2})\s*(?:-\s*)?uhr",
        and_word=" und ",
        stop_words=(
            "stopp",
            "stop",
            "halt",
            "aufhören",
            "hör auf",
            "hören sie auf",
            "ruhe",
            "sei still",
            "still",
            "pause",
            "genug",
        ),
        fillers=("bitte", "jetzt", "ok", "okay", "mal", "doch"),
    ),
    "es": Language(
        code="es",
        name="Español",
        phrases={
            "unsure": "No estoy seguro.",
            "no_vision": "La visión no está disponible ahora.",
            "not_heard": "Perdón, no lo entendí.",
            "say_again": "Perdón, no estoy seguro de haberlo oído bien. Repítelo, por favor.",
            "heard": "Entendí: {text}.",
            "too_long": "Era largo; respondí a la primera parte.",
            "camera_off": "La cámara está apagada o no envía nada. Enciéndala y vuelva a preguntar.",
            "cannot_hear": "Las preguntas habladas en este idioma necesitan otro modelo de voz; escriba su pregunta.",
            "sign": "Letrero: {text}",
            "sign_unreadable": "Un letrero que no puedo leer.",
            "metre": "un metro",
            "metres": "{d} metros",
            "sees_nothing_dark": "La cámara no ve nada: puede estar tapada o está demasiado oscuro.",
            "sees_nothing_featureless": "La cámara solo ve una superficie lisa.",
            "still_dark": "Sigue sin verse nada.",
            "busy": "Estoy ocupado; pregunta de nuevo en un momento.",
            "no_text": "No veo texto.",
            "no_reader": "La lectura de texto no está disponible ahora.",
            "reading_failed": "Esta vez no pude leer el texto. Inténtelo de nuevo.",
            "text_blurred": "Hay texto, pero está demasiado borroso para leerlo. Sujeta el teléfono quieto.",
            "text_partly_blurred": "Parte del texto estaba demasiado borrosa para leerla.",
            "text_cut_off": "El texto se sale por {edges}. Mueve el teléfono hacia ese lado.",
            "reading": "Leyendo.",
            "reading_done": "Eso es todo el texto.",
            "nothing_to_continue": "No hay nada más que leer.",
            "more_follows": "Diga «sigue» para oír más.",
            "settings_changed": "Tus ajustes cambiaron.",
            "rate": "Velocidad de voz {value}.",
            "volume": "Volumen {value} por ciento.",
            "quiet_on": "Modo silencioso activado: solo avisos y respuestas.",
            "quiet_off": "Modo silencioso desactivado.",
            "voice": "Voz nueva.",
            "language": "Idioma: {value}.",
            "verbosity:hazards-only": "Solo avisos.",
            "verbosity:standard": "Avisos y letreros.",
            "verbosity:detailed": "Avisos, letreros y descripciones.",
        },
        category_words={
            "steps": ("escalón", "escalera", "bordillo", "desnivel", "escalera mecánica"),
            "vehicles": ("coche", "bici", "bicicleta", "autobús", "camión", "moto", "vehículo"),
            "people": ("persona", "gente", "hombre", "mujer", "niño", "peatón", "perro"),
            "doors": ("puerta", "portón"),
            "surface": ("mojado", "charco", "hielo", "agujero", "irregular", "grieta", "rejilla"),
        },
        edges={"left": "la izquierda", "right": "la derecha", "top": "arriba", "bottom": "abajo"},
        side_words={"left": ("izquierda",), "right": ("derecha",)},
        clock=r"a\s+las?\s+(\d{1,2})(?!\d)",
        and_word=" y ",
        stop_words=(
            "para",
            "pare",
            "alto",
            "basta",
            "detente",
            "deténgase",
            "stop",
            "cállate",
            "silencio",
            "pausa",
            "ya basta",
        ),
        fillers=("por", "favor", "ya", "ahora", "vale", "ok"),
    ),
}


def language(code: str) -> Language:
    """The row for ``code``; English for a code not in the table (never raises)."""
    return LANGUAGES.get(code, LANGUAGES["en"])


def phrase(code: str, key: str, **values: object) -> str:
    """A fixed phrase in the user's language, filled in."""
    text = language(code).phrases[key]
    return text.format(**values) if values else text


def join_words(code: str, items: list[str]) -> str:
    """``["left", "bottom"]`` as "left and bottom", in the user's language (never a
    slash, which espeak-ng reads as "slash")."""
    row = language(code)
    if len(items) <= 1:
        return "".join(items)
    return row.list_sep.join(items[:-1]) + row.and_word + items[-1]


_ZH_NUMERALS = {
    "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5,
    "六": 6, "七": 7, "八": 8, "九": 9, "十": 10,
}  # fmt: skip


def clock_hour(text: str) -> int | None:
    """The hour of a clock position in ``text`` in any language of the table, or None."""
    low = text.lower()
    for row in LANGUAGES.values():
        m = re.search(row.clock, low)
        if m is None:
            continue
        hour = m.group(1)
        if hour.isdigit():
            return int(hour)
        if hour.startswith("十"):  # 十, 十一, 十二
            return 10 + (_ZH_NUMERALS.get(hour[1:], 0) if len(hour) > 1 else 0)
        if hour in _ZH_NUMERALS:
            return _ZH_NUMERALS[hour]
    return None


def side_word(text: str) -> str | None:
    """``left`` or ``right`` when ``text`` has a side word of any language, else None."""
    low = text.lower()
    for row in LANGUAGES.values():
        for side in SIDES:
            for word in row.side_words.get(side, ()):
                pattern = re.escape(word) if row.cjk else rf"(?<!\w){re.escape(word)}(?!\w)"
                if re.search(pattern, low):
                    return side
    return None


def is_stop_request(text: str) -> bool:
    """Whether a typed or spoken utterance means Stop ("stop", "stop please", "停",
    "arrête") in any language of the table. The whole utterance must be one, so
    "stop sign ahead?" is still a question."""
    if not text or len(text) > 60:
        return False
    low = text.lower().replace("’", "'").replace("'", " ")
    tokens = re.findall(r"\w+", low)
    if not tokens:
        return False
    for row in LANGUAGES.values():
        if row.cjk:
            squeezed = "".join(tokens)
            for filler in row.fillers:
                squeezed = squeezed.replace(filler, "")
            stops = {w.replace(" ", "") for w in row.stop_words}
            stops |= {w.replace(" ", "").replace(f, "") for w in stops for f in row.fillers}
            if squeezed in stops:
                return True
            continue
        kept = [t for t in tokens if t not in row.fillers]
        for words in (tokens, kept):  # "taisez-vous" as it is; "stop, s'il vous plaît" bare
            if " ".join(words) in row.stop_words or (
                len(set(words)) == 1 and words[0] in row.stop_words  # "stop, stop!"
            ):
                return True
    return False


def settings_summary(values: dict[str, object], changed: list[str], code: str) -> str:
    """One short sentence saying what a settings change did ("Speech rate 150. Warnings
    only."), in the user's language."""
    parts: list[str] = []
    for key in changed:
        value = values.get(key)
        if key == "speech_rate":
            parts.append(phrase(code, "rate", value=value))
        elif key == "volume" and isinstance(value, int | float):
            parts.append(phrase(code, "volume", value=round(float(value) * 100)))
        elif key == "quiet":
            parts.append(phrase(code, "quiet_on" if value else "quiet_off"))
        elif key == "verbosity" and values.get("quiet") is True and "quiet" in changed:
            continue  # quiet mode, just turned on, says what is said now
        elif key == "verbosity" and f"verbosity:{value}" in language(code).phrases:
            parts.append(phrase(code, f"verbosity:{value}"))
        elif key == "voice":
            parts.append(phrase(code, "voice"))
        elif key == "language" and isinstance(value, str):
            parts.append(phrase(code, "language", value=language(value).name))
    if len(parts) < len(changed) and not parts:
        parts.append(phrase(code, "settings_changed"))
    return " ".join(parts)
