"""Write the demo's scored sentence pairs (train.jsonl, dev.jsonl, test.jsonl) beside this file.

Every sentence below was written for stsweep. Sentences come in *groups*: a few paraphrases of one statement
(the first is the reference), then *variants* that change it, each with a hand-given similarity to the
reference. Pairs are made from them with these scores (0..1):

- two paraphrases of one group: 0.8-1.0 (the product of their fidelities; the reference has 1.0, a
  paraphrase 0.95 unless a lossier one says otherwise);
- a variant and a paraphrase: the variant's score (0.2-0.7) times the paraphrase's fidelity;
- paraphrases of two groups of the same topic: 0.2 (same subject, different claim);
- sentences of two unrelated topics: 0.0 (topics that touch, say cooking and shopping, are never paired this
  way: "the house is freezing" and "it was below freezing overnight" are not unrelated).

Groups, not pairs, are split between train, dev and test (per topic: 4, 2 and 2 groups), so the three files
share no sentence, let alone a pair, and dev/test measure how a model does on statements it never saw.

    python service/demo_data/make_demo_data.py        # deterministic: rewrites the three files identically
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

SEED = 20240611
HERE = Path(__file__).resolve().parent
SIZES = {"train": 400, "dev": 150, "test": 150}
GROUPS_PER_SPLIT = {"train": 4, "dev": 2, "test": 2}
# Share of each kind of pair in a split: paraphrase, variant, same topic, other topic.
MIX = {"paraphrase": 0.25, "variant": 0.50, "same_topic": 0.15, "other_topic": 0.10}
SAME_TOPIC = 0.2
PARAPHRASE_FIDELITY = 0.95


@dataclass
class Group:
    topic: str
    paraphrases: list[tuple[str, float]]
    variants: list[tuple[str, float]] = field(default_factory=list)


TOPICS: dict[str, list[Group]] = {}


def G(topic: str, *paraphrases: str | tuple[str, float], var: list[tuple[str, float]]) -> None:
    """Add a group: the reference sentence, its paraphrases (optionally `(text, fidelity)`) and its variants."""
    paras = [(p, 1.0 if i == 0 else PARAPHRASE_FIDELITY) if isinstance(p, str) else p
             for i, p in enumerate(paraphrases)]
    TOPICS.setdefault(topic, []).append(Group(topic, paras, var))


# Topics close enough that a pair across them may share something: never used for "unrelated" pairs.
NEIGHBOURS = {frozenset(p) for p in [
    ("cooking", "shopping"), ("cooking", "health"), ("sports", "health"), ("travel", "weather"),
    ("sports", "weather"), ("software", "work"), ("travel", "work"), ("music", "books_films"),
    ("home_garden", "weather"), ("home_garden", "animals"),
]}

# ---------------------------------------------------------------------------------------------------- cooking
G("cooking", "The soup needs more salt.", "This soup could use a bit more salt.",
  "There isn't enough salt in this soup.",
  var=[("The soup needs a little more pepper.", .55), ("This soup is far too salty.", .4),
       ("I made the soup with homemade chicken stock.", .25)])
G("cooking", "Preheat the oven to 200 degrees before you put the bread in.",
  "Heat the oven to 200 degrees first, then bake the bread.",
  "Make sure the oven is already at 200 degrees when the bread goes in.",
  var=[("Preheat the oven to 180 degrees before the cake goes in.", .6),
       ("The bread came out of the oven burnt on the bottom.", .3),
       ("Let the bread cool for an hour before slicing it.", .3)])
G("cooking", "Chop the onions finely and fry them until golden.",
  "Dice the onions small and cook them in oil until they turn golden brown.",
  "Fry finely chopped onions until they are golden.",
  var=[("Fry the garlic until golden, but don't let it burn.", .55),
       ("Slice the onions thinly and add them raw to the salad.", .4),
       ("Chopping onions always makes my eyes water.", .3)])
G("cooking", "We're having pasta with tomato sauce for dinner tonight.",
  "Tonight's dinner is spaghetti in tomato sauce.", "For dinner tonight I'm making pasta with a tomato sauce.",
  var=[("We had pasta with tomato sauce for lunch yesterday.", .6),
       ("We're having grilled fish for dinner tonight.", .45), ("I bought fresh tomatoes for the sauce.", .35)])
G("cooking", "Let the rice sit, covered, for ten minutes after it finishes cooking.",
  "Once the rice is done, keep the lid on and leave it for ten minutes.",
  "After cooking, leave the rice covered for ten minutes before serving.",
  var=[("Let the steak rest for ten minutes before cutting it.", .4),
       ("Rinse the rice several times before you cook it.", .35), ("The rice stuck to the bottom of the pan.", .25)])
G("cooking", "This recipe is vegetarian, so it contains no meat.", "There is no meat in this recipe; it's vegetarian.",
  ("The recipe is meat-free.", .9),
  var=[("This recipe is vegan, so it has no meat, eggs or dairy.", .7),
       ("This recipe calls for a pound of minced beef.", .3), ("My sister stopped eating meat last year.", .3)])
G("cooking", "The cake needs to bake for forty minutes.", "Bake the cake for forty minutes.",
  ("Leave the cake in the oven for about forty minutes.", .9),
  var=[("Check the cake with a toothpick after thirty minutes.", .5),
       ("The cookies only need twelve minutes in the oven.", .45),
       ("The cake has to cool completely before you ice it.", .35)])
G("cooking", "I burned the toast again this morning.", "This morning I managed to burn the toast once more.",
  "The toast got burnt again at breakfast today.",
  var=[("I burned my hand on the toaster this morning.", .4), ("The toast this morning was perfectly golden.", .35),
       ("We ran out of bread, so there was no toast this morning.", .35)])

# ---------------------------------------------------------------------------------------------------- weather
G("weather", "It's going to rain all day tomorrow.", "Tomorrow will be rainy from morning to night.",
  "Expect rain throughout the day tomorrow.",
  var=[("It might rain tomorrow afternoon.", .6), ("It rained all day yesterday.", .5),
       ("Tomorrow will be dry and sunny.", .3)])
G("weather", "The temperature dropped below freezing last night.", "Last night it got colder than zero degrees.",
  "It was below freezing overnight.",
  var=[("The temperature will drop below freezing tonight.", .65), ("The lake froze over during the night.", .5),
       ("Last night was unusually warm for January.", .3)])
G("weather", "A strong wind knocked down several trees in the park.",
  "Several trees in the park were blown over by heavy winds.", "High winds brought down a number of trees in the park.",
  var=[("Lightning struck a tree in the park.", .45), ("Strong winds are expected this weekend.", .4),
       ("The city planted several new trees in the park.", .25)])
G("weather", "It's a perfect sunny day for the beach.", "The sun is out and it's ideal weather for going to the beach.",
  "Today's sunshine makes it a great day to head to the beach.",
  var=[("It's a perfect sunny day for a picnic.", .65), ("It's too cloudy to go to the beach today.", .4),
       ("Don't forget sunscreen if you go to the beach.", .35)])
G("weather", "Heavy snow has closed the mountain roads.",
  "The roads through the mountains are shut because of heavy snowfall.", "Mountain roads are closed after a big snowstorm.",
  var=[("Heavy rain has flooded the coastal road.", .45),
       ("The mountain roads have reopened now that the snow has been cleared.", .45),
       ("The ski resorts are expecting fresh snow this week.", .3)])
G("weather", "The forecast says it will be very humid this week.", "According to the forecast, this week will be muggy.",
  ("This week is expected to be hot and sticky.", .85),
  var=[("The forecast says it will be cold this week.", .45), ("The air has been very dry this week.", .35),
       ("Humid weather makes my hair frizzy.", .3)])
G("weather", "There's thick fog on the motorway this morning.",
  ("Fog is making visibility very poor on the motorway this morning.", .9),
  "The motorway is covered in dense fog this morning.",
  var=[("The fog should lift by midday.", .5), ("Drivers are warned about ice on the motorway tonight.", .4),
       ("The motorway is closed for repairs this morning.", .25)])
G("weather", "We saw a rainbow after the storm.", "A rainbow appeared once the storm had passed.",
  "After the thunderstorm there was a rainbow in the sky.",
  var=[("We saw a double rainbow over the hills.", .6), ("The storm knocked out our power for hours.", .3),
       ("The storm is expected to pass by evening.", .3)])

# ----------------------------------------------------------------------------------------------------- sports
G("sports", "Our team won the match three goals to one.", "We beat them 3-1.", "Our side won the game 3 to 1.",
  var=[("Our team lost the match three goals to one.", .45),
       ("Our team scored three goals in the first half.", .45), ("The match ended in a draw.", .3)])
G("sports", "She runs five kilometres every morning before work.",
  "Every morning before work, she goes for a 5 km run.", "She does a five-kilometre run each day before heading to work.",
  var=[("She swims a few lengths every morning before work.", .45),
       ("She used to run every morning but stopped last year.", .45), ("She is training for her first marathon.", .35)])
G("sports", "The final was postponed because of the rain.", "Rain forced them to put off the final.",
  ("They delayed the final due to bad weather.", .85),
  var=[("The final was cancelled because of a power cut.", .4),
       ("The crowd stayed despite the rain during the final.", .4), ("The final will be played on Sunday.", .3)])
G("sports", "He broke his ankle playing basketball.", "He fractured his ankle during a basketball game.",
  "Playing basketball, he ended up with a broken ankle.",
  var=[("He sprained his wrist playing tennis.", .45), ("His ankle is healing well after the operation.", .4),
       ("He plays basketball every Thursday evening.", .3)])
G("sports", "The new coach wants the players to focus on defence.",
  "The team's new manager is asking the players to concentrate on defending.",
  "Defence is the new coach's main priority for the players.",
  var=[("The new coach wants the team to attack more.", .45),
       ("The players had their first training session with the new coach.", .4),
       ("The old coach was sacked after a string of defeats.", .3)])
G("sports", "Tickets for the game sold out in ten minutes.",
  "The game sold out within ten minutes of tickets going on sale.",
  "It took only ten minutes for all the tickets to the match to be sold.",
  var=[("Tickets for the game go on sale on Friday.", .45), ("Plenty of tickets are still available for the game.", .35),
       ("Ticket prices for the game have doubled this year.", .35)])
G("sports", "I go cycling in the hills every weekend.", "Every weekend I ride my bike in the hills.",
  "At weekends I take my bicycle out into the hills.",
  var=[("I go hiking in the hills every weekend.", .5), ("I cycle to work every day.", .45),
       ("My bike got a flat tyre on the hill.", .3)])
G("sports", "The tennis match lasted almost five hours.", "That tennis game went on for nearly five hours.",
  "It was a tennis match of close to five hours.",
  var=[("The tennis match was over in under an hour.", .4), ("Rain interrupted the tennis match twice.", .35),
       ("The golf tournament lasted four days.", .25)])

# ----------------------------------------------------------------------------------------------------- travel
G("travel", "Our flight was delayed by three hours.", "The plane left three hours late.",
  "We had a three-hour delay on our flight.",
  var=[("Our train was delayed by three hours.", .55), ("Our flight was cancelled.", .5),
       ("The flight landed twenty minutes early.", .35)])
G("travel", "I need to renew my passport before the trip.", "My passport has to be renewed before we travel.",
  ("Before the trip I have to get a new passport.", .9),
  var=[("I need to apply for a visa before the trip.", .6), ("I lost my passport at the airport.", .4),
       ("You don't need a passport for this trip.", .4)])
G("travel", "The hotel room had a beautiful view of the sea.",
  "From our hotel room we could see the ocean, and it was lovely.", ("Our room at the hotel looked out over the sea.", .9),
  var=[("The hotel is a short walk from the beach.", .45), ("Our room looked out over a car park.", .4),
       ("The hotel room was small and noisy.", .35)])
G("travel", "The train to the airport leaves every fifteen minutes.",
  "There's a train to the airport every quarter of an hour.", "Trains run to the airport at fifteen-minute intervals.",
  var=[("The bus to the airport leaves every thirty minutes.", .55),
       ("The last train to the airport leaves at midnight.", .45),
       ("The airport is about forty minutes from the city centre.", .3)])
G("travel", "We're spending two weeks in Italy this summer.", "This summer we'll be in Italy for a fortnight.",
  "Our summer holiday is two weeks in Italy.",
  var=[("We're spending a weekend in Rome this spring.", .5), ("We spent two weeks in Spain last summer.", .45),
       ("I'm learning some Italian before our holiday.", .35)])
G("travel", "Can you recommend a cheap place to stay near the station?",
  "Do you know any inexpensive hotels close to the train station?", "Is there somewhere affordable to stay near the station?",
  var=[("Can you recommend a good restaurant near the station?", .45),
       ("The hotels near the station are all very expensive.", .45), ("How far is the station from here?", .25)])
G("travel", "My suitcase didn't arrive with the rest of the luggage.", ("The airline lost my suitcase.", .85),
  "My bag never showed up on the baggage carousel.",
  var=[("My suitcase was damaged during the flight.", .5), ("My suitcase is too heavy to check in.", .3),
       ("I only travel with hand luggage.", .25)])
G("travel", "The museum is closed on Mondays.", "You can't visit the museum on a Monday.",
  "On Mondays the museum doesn't open.",
  var=[("The castle is closed on Mondays.", .55), ("The museum stays open late on Fridays.", .4),
       ("The museum is free on the first Sunday of the month.", .35)])

# --------------------------------------------------------------------------------------------------- software
G("software", "The app crashes every time I try to upload a photo.",
  "Whenever I upload a picture, the application crashes.", "Uploading an image makes the app crash every single time.",
  var=[("The app crashes when I open the settings page.", .5),
       ("Uploading a photo takes a very long time in the app.", .5),
       ("The app lets you upload up to ten photos at once.", .3)])
G("software", "You need to restart your computer to finish installing the update.",
  "The update will finish installing after you reboot the computer.", "Reboot your machine to complete the update.",
  var=[("The update failed to install.", .45), ("A new update is available for your computer.", .45),
       ("Please save your work before the computer restarts.", .35)])
G("software", "I forgot my password and can't log in.", "I can't sign in because I've forgotten my password.",
  "I'm locked out of my account since I don't remember the password.",
  var=[("My account was locked after too many failed logins.", .55), ("I changed my password yesterday.", .35),
       ("Passwords must be at least twelve characters long.", .25)])
G("software", "The website is very slow to load today.", "Pages on the site are taking ages to load today.",
  "The site is loading really slowly today.",
  var=[("The app is very slow to load today.", .6), ("The website is down today.", .55),
       ("The website has a new design.", .25)])
G("software", "Please back up your files before upgrading the system.", "Make a backup of your files before you upgrade.",
  "Before the upgrade, copy your files somewhere safe.",
  var=[("Backups run automatically every night.", .4), ("I lost all my files when the disk failed.", .35),
       ("The upgrade adds several new features.", .25)])
G("software", "The bug was fixed in the latest release.", "The newest version includes a fix for that bug.",
  "That bug is gone as of the latest release.",
  var=[("The bug will be fixed in the next release.", .6), ("The latest release introduced a new bug.", .45),
       ("Please report any bugs you find on the issue tracker.", .3)])
G("software", "My laptop battery runs out after only two hours.", "The battery in my laptop only lasts about two hours.",
  "After two hours of use, my laptop's battery is empty.",
  var=[("My laptop takes hours to charge.", .45), ("My phone battery lasts all day.", .4),
       ("My laptop gets very hot when it's charging.", .35)])
G("software", "This spreadsheet keeps freezing when I sort the columns.", "Sorting the columns makes the spreadsheet freeze.",
  "Every time I sort a column, the spreadsheet hangs.",
  var=[("The spreadsheet freezes as soon as I open it.", .55), ("You can sort the columns by clicking the header.", .35),
       ("The spreadsheet has more than a million rows.", .3)])

# ---------------------------------------------------------------------------------------------------- animals
G("animals", "My dog barks at the postman every morning.", "Every morning our dog barks at the mail carrier.",
  ("The dog starts barking whenever the postman comes in the morning.", .9),
  var=[("My neighbour's dog barks all night.", .45), ("My dog is very friendly with the postman.", .4),
       ("The postman was bitten by a dog.", .35)])
G("animals", "The cat sleeps on the windowsill all afternoon.",
  "Our cat spends the whole afternoon napping on the windowsill.", "All afternoon the cat dozes on the window ledge.",
  var=[("The cat sleeps on my bed at night.", .5), ("The cat likes to watch the birds from the window.", .45),
       ("The cat knocked a plant off the windowsill.", .35)])
G("animals", "Bees are important for pollinating crops.", "Crops depend on bees for pollination.",
  "Many crops need bees to pollinate them.",
  var=[("Butterflies also help to pollinate flowers.", .5), ("Bee populations have been falling in recent years.", .4),
       ("I was stung by a bee in the garden.", .25)])
G("animals", "We adopted a puppy from the animal shelter.", "We got a puppy from the rescue shelter.",
  "Our new puppy came from the local animal shelter.",
  var=[("We adopted a kitten from the animal shelter.", .6), ("We bought a puppy from a breeder.", .5),
       ("The animal shelter is looking for volunteers.", .3)])
G("animals", "Horses can sleep standing up.", "A horse is able to sleep on its feet.",
  "Horses are capable of sleeping while standing.",
  var=[("Cows can also sleep standing up, but they usually lie down.", .5),
       ("Horses usually sleep for only a few hours a day.", .45), ("Horses need a lot of space to run.", .25)])
G("animals", "The birds have started building a nest in our chimney.", "A pair of birds is making a nest in the chimney.",
  "Some birds are nesting in our chimney.",
  var=[("The baby birds in the chimney have hatched.", .5), ("We found a bird's nest in the garden hedge.", .45),
       ("We had the chimney swept last week.", .25)])
G("animals", "Feed the fish only a small pinch of food once a day.", "The fish should get just a little food, once daily.",
  ("Give the fish a tiny amount of food each day.", .9),
  var=[("Overfeeding can make fish ill.", .5), ("Feed the cat twice a day.", .4),
       ("Clean the fish tank every two weeks.", .35)])
G("animals", "Elephants remember places where they found water.",
  "An elephant can recall where it has found water before.", "Elephants have a good memory for water sources.",
  var=[("Elephants need to drink a lot of water every day.", .45),
       ("Dolphins are known to remember each other for years.", .3), ("Elephants live in close family groups.", .25)])

# ------------------------------------------------------------------------------------------------------ music
G("music", "She has been playing the piano since she was six.", "She started learning the piano at the age of six.",
  "She's played piano ever since she was six years old.",
  var=[("She has been playing the violin since she was six.", .55), ("She gave up the piano when she was twelve.", .45),
       ("She bought a new piano last month.", .3)])
G("music", "The concert was cancelled because the singer was ill.",
  "They called off the concert due to the singer's illness.", "The singer was sick, so the show was cancelled.",
  var=[("The concert was postponed until next month.", .5), ("The singer performed even though she was ill.", .4),
       ("The concert sold out in a few hours.", .25)])
G("music", "This song always reminds me of my summer holidays.",
  "Whenever I hear this song, I think of summer holidays.", "This track brings back memories of my summer holidays.",
  var=[("I listened to this song all through the holidays.", .55), ("This song was a big hit last summer.", .45),
       ("I can't stand this song.", .25)])
G("music", "The band is releasing a new album next month.", "Next month the group will put out a new record.",
  "A new album from the band comes out next month.",
  var=[("The band is going on tour next month.", .45), ("The band's new album got terrible reviews.", .45),
       ("The band released its first album ten years ago.", .35)])
G("music", "Turn the music down, it's far too loud.", "The music is much too loud, please turn it down.",
  "Could you lower the volume? It's too loud.",
  var=[("Turn the music up, I can't hear it.", .45), ("The neighbours complained about our music.", .45),
       ("I like listening to music while I work.", .2)])
G("music", "He learned to play the guitar by watching online videos.",
  "He taught himself guitar from videos on the internet.", "He picked up the guitar by following video lessons online.",
  var=[("He learned to play the guitar from his grandfather.", .55),
       ("He learned to cook by watching online videos.", .4), ("He sells old guitars online.", .3)])
G("music", "The orchestra will perform Beethoven's ninth symphony on Saturday.",
  "On Saturday the orchestra is playing Beethoven's Ninth.",
  "Beethoven's ninth symphony is on the orchestra's programme this Saturday.",
  var=[("The orchestra performed Mozart last Saturday.", .45), ("Tickets for Saturday's concert are almost gone.", .35),
       ("The orchestra is looking for a new conductor.", .25)])
G("music", "Singing in a choir helps me relax after work.", "After work, I unwind by singing with my choir.",
  "I find choir practice a good way to relax at the end of the working day.",
  var=[("Playing the drums helps me relax after work.", .55), ("I was too tired to go to choir practice tonight.", .4),
       ("Our choir is performing at the town hall in December.", .35)])

# ----------------------------------------------------------------------------------------------------- health
G("health", "Drinking enough water helps prevent headaches.", "Staying well hydrated can stop headaches from starting.",
  "Headaches are less likely if you drink plenty of water.",
  var=[("Too much coffee can give you a headache.", .4), ("Drink plenty of water when you exercise in the heat.", .4),
       ("I take painkillers when I have a headache.", .35)])
G("health", "The doctor told me to rest my knee for two weeks.", "My doctor said I should keep off my knee for a fortnight.",
  "I've been advised by the doctor to rest my knee for two weeks.",
  var=[("The doctor told me to rest my back for a week.", .6), ("My knee still hurts after two weeks of rest.", .45),
       ("I have a doctor's appointment next week.", .25)])
G("health", "Getting eight hours of sleep improves concentration.", "Sleeping eight hours a night helps you focus better.",
  ("A full night's sleep makes it easier to concentrate.", .85),
  var=[("I only slept four hours last night and can't focus.", .5), ("Regular exercise also improves concentration.", .45),
       ("Too much screen time before bed makes it hard to sleep.", .3)])
G("health", "You should wash your hands before eating.", "Always wash your hands before a meal.",
  "Hands should be washed before you eat.",
  var=[("Wash your hands after using the toilet.", .5), ("Washing your hands helps stop colds from spreading.", .45),
       ("Wash the vegetables before eating them.", .4)])
G("health", "I've had a sore throat and a cough since Monday.", "Since Monday I've been coughing and my throat hurts.",
  ("My throat has been sore and I've had a cough since the start of the week.", .9),
  var=[("I've had a fever since Monday.", .5), ("My cough is much better since Monday.", .45),
       ("Honey and lemon are good for a sore throat.", .35)])
G("health", "Walking thirty minutes a day is good for your heart.", "A daily half-hour walk helps keep your heart healthy.",
  "Thirty minutes of walking every day benefits your heart.",
  var=[("Walking thirty minutes a day helps you sleep better.", .55), ("Smoking is bad for your heart.", .35),
       ("Running is harder on your knees than walking.", .3)])
G("health", "The clinic now offers flu vaccinations without an appointment.",
  "You can get a flu jab at the clinic without booking.", "No appointment is needed for a flu shot at the clinic anymore.",
  var=[("You need an appointment to see a doctor at the clinic.", .45),
       ("Flu vaccinations are recommended for people over sixty-five.", .4), ("The clinic is closed for the holidays.", .25)])
G("health", "Eating too much sugar is bad for your teeth.", ("Sugary food damages your teeth.", .9),
  "Too much sugar in your diet harms your teeth.",
  var=[("Eating too much salt is bad for your blood pressure.", .45), ("Brush your teeth twice a day.", .35),
       ("I have an appointment with the dentist tomorrow.", .25)])

# --------------------------------------------------------------------------------------------------- shopping
G("shopping", "The supermarket is open until ten tonight.", "Tonight the supermarket closes at ten.",
  "You can shop at the supermarket until ten o'clock this evening.",
  var=[("The pharmacy is open until ten tonight.", .55), ("The supermarket opens at seven in the morning.", .45),
       ("The supermarket is closed on public holidays.", .35)])
G("shopping", "These shoes are half price this week.", "This week the shoes are fifty percent off.",
  "You can get these shoes for half the usual price this week.",
  var=[("These jackets are half price this week.", .6), ("The sale ends on Sunday.", .35),
       ("These shoes are too small for me.", .3)])
G("shopping", "I'd like to return this jacket because it doesn't fit.",
  "This jacket doesn't fit, so I want to bring it back.", ("Can I return this coat? It's the wrong size.", .9),
  var=[("I'd like to exchange this jacket for a different colour.", .55),
       ("You can return items within thirty days.", .4), ("The jacket fits perfectly.", .3)])
G("shopping", "We need milk, eggs and bread from the shop.", ("Can you pick up milk, eggs and bread at the shop?", .9),
  "From the shop we need bread, eggs and milk.",
  var=[("We need milk, butter and cheese from the shop.", .6), ("We've run out of milk.", .45),
       ("The shop has stopped selling fresh bread.", .3)])
G("shopping", "My online order still hasn't arrived.", "The package I ordered online hasn't come yet.",
  "I'm still waiting for my online order to be delivered.",
  var=[("My online order arrived damaged.", .45), ("My online order was delivered a day early.", .4),
       ("Delivery is free on orders over fifty euros.", .25)])
G("shopping", "Do you accept payment by card?", "Can I pay with a card here?", ("Is it possible to pay by credit card?", .9),
  var=[("We only accept cash.", .45), ("Can I pay in instalments?", .45), ("My card was declined at the till.", .4)])
G("shopping", "The new phone costs much more than the old model.",
  "The latest phone is a lot more expensive than the previous one.",
  ("They've raised the price a lot for the new phone model.", .85),
  var=[("The new phone has a much better camera than the old model.", .45), ("The old phone model is now on sale.", .4),
       ("I dropped my new phone and cracked the screen.", .2)])
G("shopping", "The market sells fresh vegetables every Saturday morning.",
  "Every Saturday morning you can buy fresh vegetables at the market.",
  "On Saturday mornings there are fresh vegetables for sale at the market.",
  var=[("The market sells fresh fish on Fridays.", .5), ("Supermarket vegetables are cheaper than the market's.", .35),
       ("The market has moved to the town square.", .3)])

# ------------------------------------------------------------------------------------------------------- work
G("work", "The meeting has been moved to Thursday afternoon.", "We've rescheduled the meeting for Thursday afternoon.",
  "The meeting will now take place on Thursday afternoon.",
  var=[("The meeting has been cancelled.", .5), ("I can't make the meeting on Thursday afternoon.", .5),
       ("The meeting on Thursday will last two hours.", .45)])
G("work", "She was promoted to team leader last month.", "Last month she became the team leader.",
  "She got a promotion to team lead a month ago.",
  var=[("She applied for the team leader position.", .55), ("She left the company last month.", .3),
       ("The team leader is on holiday this week.", .3)])
G("work", "I'm working from home today because of the train strike.",
  "Due to the rail strike, I'm working at home today.", "The trains are on strike, so I'm doing my work from home today.",
  var=[("I'm working from home on Fridays from now on.", .45), ("The train strike has been called off.", .35),
       ("I'm taking a day off today.", .35)])
G("work", "Please send me the report by the end of the day.", "I need the report from you before the day is over.",
  "Could you get the report to me by close of business today?",
  var=[("I sent you the report this morning.", .5), ("The report is due next Monday.", .45),
       ("The report has several errors in it.", .3)])
G("work", "The company is hiring three new engineers.", ("Three engineering positions are open at the company.", .9),
  "The firm is looking to recruit three more engineers.",
  var=[("The company is hiring a new marketing manager.", .5), ("The company is laying off three engineers.", .45),
       ("The engineers are asking for higher salaries.", .25)])
G("work", "My manager approved my holiday request for August.", "My boss said yes to my time off in August.",
  "I got approval from my manager to take my holiday in August.",
  var=[("I still need to ask for time off in August.", .5), ("My manager turned down my holiday request for August.", .45),
       ("Most people in the office take their holidays in August.", .3)])
G("work", "The printer on the third floor is out of paper.", "There's no paper left in the third-floor printer.",
  ("Someone needs to refill the paper in the printer on the third floor.", .85),
  var=[("The printer on the third floor is broken.", .55), ("The printer on the second floor is out of toner.", .4),
       ("Please don't print documents unless you need to.", .25)])
G("work", "Our team finished the project two weeks ahead of schedule.", "We completed the project two weeks early.",
  "Our team wrapped up the project a fortnight before the deadline.",
  var=[("Our project is running two weeks behind schedule.", .45),
       ("The client was very happy with the finished project.", .4), ("Our team starts a new project next week.", .3)])

# ------------------------------------------------------------------------------------------------ home_garden
G("home_garden", "The kitchen tap has been dripping all week.", "All week the tap in the kitchen has been leaking.",
  "There's been a drip from the kitchen tap for the whole week.",
  var=[("The bathroom tap has been dripping since Monday.", .6), ("A plumber fixed the kitchen tap this morning.", .45),
       ("We're replacing the kitchen sink.", .3)])
G("home_garden", "Water the tomato plants every evening in hot weather.",
  "When it's hot, give the tomatoes water each evening.", "In hot weather, the tomato plants need watering every evening.",
  var=[("Don't overwater the tomato plants or the roots will rot.", .45), ("Water the lawn early in the morning.", .4),
       ("The tomato plants are finally producing fruit.", .3)])
G("home_garden", "We painted the living room a pale shade of green.", ("The living room now has light green walls.", .9),
  "We gave the living room a coat of pale green paint.",
  var=[("We're thinking about painting the living room.", .5), ("We painted the bedroom dark blue.", .45),
       ("The living room needs new curtains.", .3)])
G("home_garden", "The heating isn't working and the house is freezing.",
  "The house is really cold because the heating has broken.", "Our heating has stopped working, so it's freezing inside.",
  var=[("The air conditioning isn't working and the house is boiling.", .4),
       ("Turn the heating down, it's too warm in here.", .35), ("We had new heating installed last year.", .3)])
G("home_garden", "Don't forget to put the bins out on Tuesday night.",
  "Remember the bins need to go out on Tuesday evening.", "Tuesday night is when the bins have to go out, so don't forget.",
  var=[("The recycling is collected every other Friday.", .4), ("The bins weren't emptied this week.", .4),
       ("Someone knocked our bins over last night.", .3)])
G("home_garden", "The grass needs cutting before the weekend.", "We should mow the lawn before the weekend.",
  ("The lawn has to be mowed before Saturday.", .9),
  var=[("The hedge needs trimming before the weekend.", .55), ("The lawnmower is broken.", .35),
       ("The grass has turned brown in the heat.", .3)])
G("home_garden", "We're moving into a bigger flat next month.", "Next month we move to a larger apartment.",
  "We'll be living in a bigger flat from next month.",
  var=[("We're looking for a bigger flat.", .55), ("We moved into this flat two years ago.", .35),
       ("Our landlord is raising the rent next month.", .3)])
G("home_garden", "Plant the tulip bulbs in autumn for flowers in spring.",
  "If you put tulip bulbs in the ground in autumn, they'll flower in spring.",
  "Tulip bulbs go in during the autumn and bloom the following spring.",
  var=[("Plant the potatoes in early spring.", .4), ("The tulips in the park are in full bloom.", .4),
       ("Squirrels dug up all our tulip bulbs.", .35)])

# ------------------------------------------------------------------------------------------------ books_films
G("books_films", "The film was much better than the book.", ("I enjoyed the movie far more than the novel.", .9),
  "The movie version beats the original book by a long way.",
  var=[("The book was much better than the film.", .45), ("The film is based on a best-selling book.", .4),
       ("I haven't seen the film yet.", .25)])
G("books_films", "I couldn't put the book down until I finished it.", "The book was so gripping I read it in one go.",
  "Once I started the book, I had to keep reading until the end.",
  var=[("I gave up on the book halfway through.", .4), ("The book's ending was disappointing.", .35),
       ("I read the book on the train to work.", .3)])
G("books_films", "The library has extended its opening hours at weekends.",
  "The library is now open longer on Saturdays and Sundays.", "At weekends the library stays open for more hours now.",
  var=[("The swimming pool has extended its weekend opening hours.", .45),
       ("The library is closed for renovation.", .35), ("The library has started lending out e-books.", .3)])
G("books_films", "The cinema was almost empty on Tuesday night.", "Hardly anyone was at the cinema on Tuesday evening.",
  "There were very few people in the cinema on Tuesday night.",
  var=[("The cinema was packed on Saturday night.", .4), ("Cinema tickets are cheaper on Tuesdays.", .35),
       ("We watched a horror film on Tuesday night.", .35)])
G("books_films", "Her first novel won a major literary prize.", "She received a big literary award for her debut novel.",
  "Her debut book was awarded an important prize for fiction.",
  var=[("She was shortlisted for a literary prize but didn't win.", .5),
       ("Her first novel is being made into a film.", .45), ("Her second novel was a commercial failure.", .35)])
G("books_films", "The series finale left a lot of questions unanswered.",
  "Many questions were still open at the end of the last episode.",
  ("The final episode of the show didn't resolve many mysteries.", .9),
  var=[("The finale tied up every storyline.", .45), ("The series has been renewed for another season.", .35),
       ("I watched the whole series in one weekend.", .3)])
G("books_films", "The subtitles were out of sync with the dialogue.",
  "The subtitles didn't match up with what the actors were saying.", "The subtitles kept appearing too early or too late.",
  var=[("The film had no subtitles.", .45), ("The sound was too quiet to hear the dialogue.", .4),
       ("I prefer watching films with subtitles.", .3)])
G("books_films", "The children's book is beautifully illustrated.", "The pictures in this kids' book are lovely.",
  "This book for children has wonderful illustrations.",
  var=[("The comic book has beautiful artwork.", .55), ("The illustrator also wrote the story.", .4),
       ("The children's book is too long for bedtime.", .3)])


Pair = tuple[str, str, float]


def split_groups(rng: random.Random) -> dict[str, list[Group]]:
    splits: dict[str, list[Group]] = {name: [] for name in SIZES}
    for topic in sorted(TOPICS):
        groups = TOPICS[topic][:]
        rng.shuffle(groups)
        for name, k in GROUPS_PER_SPLIT.items():
            splits[name] += groups[:k]
            groups = groups[k:]
    return splits


def candidates(groups: list[Group]) -> dict[str, list[Pair]]:
    """Every pair of each kind that the groups of one split can make, with its score."""
    out: dict[str, list[Pair]] = {kind: [] for kind in MIX}
    for g in groups:
        for (a, fa), (b, fb) in itertools.combinations(g.paraphrases, 2):
            out["paraphrase"].append((a, b, max(0.8, fa * fb)))
        for v, s in g.variants:
            for p, fp in g.paraphrases:
                out["variant"].append((v, p, s * fp))
    for g, h in itertools.combinations(groups, 2):
        for (a, _), (b, _) in itertools.product(g.paraphrases, h.paraphrases):
            if g.topic == h.topic:
                out["same_topic"].append((a, b, SAME_TOPIC))
        for a, b in itertools.product(g.paraphrases + g.variants, h.paraphrases + h.variants):
            if g.topic != h.topic and frozenset((g.topic, h.topic)) not in NEIGHBOURS:
                out["other_topic"].append((a[0], b[0], 0.0))
    return out


def sample(pairs: list[Pair], n: int, rng: random.Random) -> list[Pair]:
    """n pairs, spreading them over as many different first sentences as possible."""
    rng.shuffle(pairs)
    chosen: list[Pair] = []
    seen: set[str] = set()
    for p in pairs:  # first pass: a new sentence each time
        if len(chosen) < n and p[0] not in seen:
            chosen.append(p)
            seen.add(p[0])
    rest = [p for p in pairs if p not in chosen]
    chosen += rest[: n - len(chosen)]
    if len(chosen) < n:
        raise ValueError(f"only {len(chosen)} pairs available, {n} wanted")
    return chosen


def build() -> dict[str, list[dict[str, object]]]:
    rng = random.Random(SEED)
    out: dict[str, list[dict[str, object]]] = {}
    for name, groups in split_groups(rng).items():
        size = SIZES[name]
        counts = {kind: round(share * size) for kind, share in MIX.items()}
        counts["other_topic"] += size - sum(counts.values())
        rows: list[dict[str, object]] = []
        for kind, pairs in candidates(groups).items():
            for a, b, score in sample(pairs, counts[kind], rng):
                if rng.random() < 0.5:
                    a, b = b, a
                rows.append({"sentence1": a, "sentence2": b, "score": round(score, 2)})
        rng.shuffle(rows)
        out[name] = rows
    return out


def check(splits: dict[str, list[dict[str, object]]]) -> None:
    sentences = [s for gs in TOPICS.values() for g in gs for s, _ in g.paraphrases + g.variants]
    dupes = {s for s in sentences if sentences.count(s) > 1}
    assert not dupes, f"sentences written twice: {sorted(dupes)}"
    owner: dict[frozenset[str], str] = {}
    for name, rows in splits.items():
        for r in rows:
            key = frozenset((str(r["sentence1"]), str(r["sentence2"])))
            assert len(key) == 2 and key not in owner, f"pair repeated ({name}, {owner.get(key)}): {sorted(key)}"
            owner[key] = name
            assert 0.0 <= float(r["score"]) <= 1.0  # type: ignore[arg-type]


def main() -> None:
    splits = build()
    check(splits)
    for name, rows in splits.items():
        path = HERE / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"{path.name}: {len(rows)} pairs")


if __name__ == "__main__":
    main()
